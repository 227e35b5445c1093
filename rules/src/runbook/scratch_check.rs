#[test]
fn proposed_builtin_runbooks_load() {
    let extra = std::fs::read_to_string("/tmp/proposed_runbooks.yaml").expect("read");
    let pack = crate::rule::RulePack::from_files(&[
        (crate::rule::BUILTIN_NAME, crate::rule::BUILTIN_PACK),
        ("runbooks.yaml", &extra),
    ])
    .expect("loads");
    assert!(pack.unresolved_runbooks().is_empty());
    assert_eq!(pack.runbooks().len(), 7);
}
