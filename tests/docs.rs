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
    let code: Vec<(String, String)> = krepair::plan::CODES
        .iter()
        .map(|(c, s, _)| {
            (
                c.to_string(),
                serde_json::to_value(s)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(table, code, "docs/report.md and plan::CODES disagree");
}

#[test]
fn exit_code_doc_lists_every_code() {
    let text = doc("exit-codes.md");
    for c in ["| 0 |", "| 1 |", "| 2 |", "| 3 |"] {
        assert!(text.contains(c), "docs/exit-codes.md lacks {c}");
    }
}
