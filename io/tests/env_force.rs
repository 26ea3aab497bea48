//! `FLOE_IO` forces a backend when the config leaves the choice open (its own test binary: the
//! environment is process-wide).

use floe_io::{BackendKind, IoConfig, IoEngine, SlabArena};

#[test]
fn floe_io_env_forces_the_backend() {
    for kind in [BackendKind::Buffered, BackendKind::Pread, BackendKind::Uring] {
        std::env::set_var("FLOE_IO", kind.name());
        let arena = SlabArena::new(1, 4096, 4096).unwrap();
        let engine = IoEngine::start(arena, IoConfig::default()).unwrap();
        assert_eq!(engine.backend(), kind);
    }
    std::env::set_var("FLOE_IO", "carrier-pigeon");
    let arena = SlabArena::new(1, 4096, 4096).unwrap();
    let err = IoEngine::start(arena, IoConfig::default()).unwrap_err();
    assert!(err.to_string().contains("carrier-pigeon"), "{err}");
    std::env::remove_var("FLOE_IO");
}
