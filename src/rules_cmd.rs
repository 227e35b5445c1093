//! `causeway rules check|test`: rule files validated, and their examples run
//! through the same engine code as live traffic.

use std::path::Path;

use anyhow::bail;
use causeway_engine::examples::run_examples;

use crate::config::{Config, load_rule_files};

/// Validates rule files and compiles their predicates.
pub(crate) fn check(path: &Path) -> anyhow::Result<()> {
    let pack = load_rule_files(path)?;
    let examples: usize = pack.rules().iter().map(|r| r.examples.len()).sum();
    println!(
        "{}: {} rules valid ({} examples; run them with `causeway rules test`)",
        path.display(),
        pack.rules().len(),
        examples
    );
    Ok(())
}

/// Runs every rule's examples; fails if one gives other incidents than expected.
pub(crate) fn test(path: &Path, config: Option<&Path>) -> anyhow::Result<()> {
    let pack = load_rule_files(path)?;
    let catalog = match config {
        Some(file) => Config::load(Some(file))?.config.catalog,
        None => Config::default().catalog,
    };
    let reports = run_examples(&pack, &catalog)?;
    let mut failed = 0;
    for r in &reports {
        if r.passed() {
            println!("ok    {} / {}", r.rule_id, r.example);
        } else {
            failed += 1;
            println!("FAIL  {} / {} ({})", r.rule_id, r.example, r.file);
            for f in &r.failures {
                println!("        {f}");
            }
        }
    }
    let without: Vec<&str> = pack
        .rules()
        .iter()
        .filter(|r| r.examples.is_empty())
        .map(|r| r.id.as_str())
        .collect();
    println!(
        "\n{} examples: {} passed, {failed} failed",
        reports.len(),
        reports.len() - failed
    );
    if !without.is_empty() {
        println!("rules without examples: {}", without.join(", "));
    }
    if failed > 0 {
        bail!("{failed} of {} examples failed", reports.len());
    }
    Ok(())
}
