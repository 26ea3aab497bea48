//! Byte sizes on the command line: `8GiB`, `4MiB`, `512KiB`, `1G`, `4096`.

/// Parses a size with an optional binary or decimal unit.
pub fn parse_size(s: &str) -> Result<u64, String> {
    s.trim()
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("{s:?} is not a size like 4MiB or 8GiB ({e})"))
}

/// Formats bytes with a binary unit (`4.0 MiB`).
pub fn human(bytes: u64) -> String {
    bytesize::ByteSize(bytes).to_string_as(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn sizes() {
        assert_eq!(parse_size("4MiB").unwrap(), 4 << 20);
        assert_eq!(parse_size("8GiB").unwrap(), 8 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("1 GB").unwrap(), 1_000_000_000);
        assert!(parse_size("lots").is_err());
    }
}
