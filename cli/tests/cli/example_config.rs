//! The documented example configuration parses.

#[test]
fn example_config_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../selfheal.example.toml");
    let s = selfheal::config::Settings::load(Some(std::path::Path::new(path))).unwrap();
    assert_eq!(s.checks["PSERVICE1"].len(), 2);
    assert_eq!(s.checks["PSERVICE1"][1].steps.len(), 3);
    assert_eq!(s.policy.auto_services, vec!["PSERVICE1"]);
}
