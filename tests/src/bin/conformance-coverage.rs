//! Writes docs/config-fields.md and docs/conformance-coverage.md from docs/config-fields.txt and
//! the `covers:` lists of tests/conformance/*.yaml (`cargo xtask conformance-coverage` runs it).

use sluice_tests::{
    conformance,
    inventory::{coverage, docs_dir, Inventory},
};

fn main() {
    let inv = Inventory::load();
    let cases = conformance::load_all(&conformance::case_dir());
    let root = docs_dir().join("..");
    let other = coverage::other_tests_problems(&inv, &root);
    for problem in coverage::covers_problems(&inv, &cases)
        .into_iter()
        .chain(other)
    {
        eprintln!("warning: {problem}");
    }
    for (name, text) in coverage::generate(&inv, &cases) {
        let path = docs_dir().join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        println!("wrote docs/{name}");
    }
}
