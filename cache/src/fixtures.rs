//! Test support: where the shared fixtures (`../shared/golden`, `../shared/traces`) live, and
//! what happens when they are absent: a test that needs one fails, unless `FLOE_SKIP_GOLDEN=1`
//! says to skip it (then it says so loudly and returns).

use std::path::PathBuf;

/// The variable that turns a missing fixture from a failure into a loud skip.
pub const SKIP_VAR: &str = "FLOE_SKIP_GOLDEN";

/// `../shared/<rel>` beside the checkout. Missing: `None` with a `SKIPPING` line when
/// `FLOE_SKIP_GOLDEN=1`, else a panic that names the path (a test without its reference must
/// not pass).
pub fn shared_fixture(rel: &str) -> Option<PathBuf> {
    let p = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared")).join(rel);
    if p.exists() {
        return Some(p);
    }
    if std::env::var(SKIP_VAR).is_ok_and(|v| v == "1") {
        eprintln!("SKIPPING: {} is missing and {SKIP_VAR}=1", p.display());
        return None;
    }
    panic!(
        "fixture {} is missing: put ../shared beside the checkout, or set {SKIP_VAR}=1 to skip \
         the tests that need it",
        p.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A missing fixture fails the test that needs it, unless the opt-out is set.
    #[test]
    fn a_missing_fixture_panics_unless_skipping_is_asked_for() {
        let rel = "golden/no-such-fixture";
        std::env::remove_var(SKIP_VAR);
        assert!(std::panic::catch_unwind(|| shared_fixture(rel)).is_err());
        std::env::set_var(SKIP_VAR, "1");
        assert_eq!(shared_fixture(rel), None);
        std::env::remove_var(SKIP_VAR);
    }
}
