//! Who the tests run as: root (`cargo test`), or one of the test users
//! scripts/test runs every binary as (`shipyard-sub` with a subordinate id
//! range, `shipyard-nosub` without). Tests whose outcome depends on it
//! assert the outcome that belongs to each.

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Whether steps can give files to ids other than root's: as root, or as
/// a user with a subordinate range (scripts/test says which user it is).
pub fn ids_range_mapped() -> bool {
    is_root() || std::env::var("SHIPYARD_TEST_SUBUID").as_deref() == Ok("1")
}
