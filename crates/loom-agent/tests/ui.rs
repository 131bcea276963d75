//! Compile-fail tests of `#[tool]`: each file under `tests/ui/` must fail to compile with the
//! error recorded next to it in a `.stderr` file. Regenerate them with `TRYBUILD=overwrite`.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
