//! The docs must not drift from the code: finding codes and exit codes.

use std::fs;

fn doc(name: &str) -> String {
    fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("docs")
            .join(name),
    )
    .unwrap()
}

#[test]
fn report_doc_lists_every_finding_code() {
    let text = doc("report.md");
    let table: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells.len() >= 4
                && cells[1].starts_with('`')
                && ["info", "warning", "error"].contains(&cells[2]))
            .then(|| (cells[1].trim_matches('`').to_string(), cells[2].to_string()))
        })
        .collect();
    let code: Vec<(String, String)> = krepair::plan::Code::ALL
        .iter()
        .map(|c| {
            (
                c.to_string(),
                serde_json::to_value(c.severity())
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(table, code, "docs/report.md and plan::Code disagree");
}

#[test]
fn exit_code_doc_lists_every_code() {
    let text = doc("exit-codes.md");
    for c in ["| 0 |", "| 1 |", "| 2 |", "| 3 |"] {
        assert!(text.contains(c), "docs/exit-codes.md lacks {c}");
    }
}

#[test]
fn exit_code_doc_lists_the_later_codes() {
    let text = doc("exit-codes.md");
    for c in ["| 4 |", "| 130 |"] {
        assert!(text.contains(c), "docs/exit-codes.md lacks {c}");
    }
}

#[test]
fn migration_doc_lists_every_rule_and_known_layer() {
    let text = doc("migration.md");
    // The rules table: | `code` | ... |, in the order of migrate::RULES.
    let table: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells.len() >= 4 && cells[1].starts_with('`') && cells[1].ends_with('`'))
                .then(|| cells[1].trim_matches('`').to_string())
        })
        .filter(|c| c.contains('-'))
        .collect();
    let rules: Vec<String> = krepair::plan::Rule::ALL
        .iter()
        .map(|r| r.to_string())
        .collect();
    assert_eq!(table, rules, "docs/migration.md and plan::Rule disagree");
    let layers = doc("layers.md");
    for l in krepair::passes::migrate::migrated_classes() {
        assert!(
            layers.contains(&format!("`{l}`")),
            "docs/layers.md lacks {l}"
        );
    }
}

#[test]
fn report_doc_lists_every_malformed_kind() {
    let report = doc("report.md");
    let exit = doc("exit-codes.md");
    let mut seen = std::collections::BTreeSet::new();
    for k in krepair::error::Malformed::ALL {
        let code = k.code();
        assert!(seen.insert(code), "duplicate kind {code}");
        assert!(
            report.contains(&format!("`{code}`")),
            "report.md lacks `{code}`"
        );
        assert!(
            exit.contains(&format!("`{code}`")),
            "exit-codes.md lacks `{code}`"
        );
    }
}
