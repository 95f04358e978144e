//! The read-only config tree (`json_tree::Node`, which a repair and a
//! dry run read) must tell the config readers exactly what
//! `serde_json::Value` (which the migration rewrites) tells them: the
//! same Normalization and Discretization sites, the same findings about
//! code, the same layer tree, on every committed archive and on configs
//! edited to stress the differences (escaped keys, duplicate keys).

use std::path::{Path, PathBuf};

use krepair::source::keras::{self as archive, Archive};
use krepair::view::config as model;
use krepair::view::json_tree::{self, Json};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every archive under `dir` (zip files and `.keras` directories).
fn archives(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.extension().is_some_and(|e| e == "keras") {
            out.push(p);
        } else if p.is_dir() {
            if p.join("config.json").is_file() {
                out.push(p);
            } else {
                archives(&p, out);
            }
        }
    }
}

/// What the readers say of one config, as text to compare.
fn readings<J: Json>(config: &J) -> String {
    format!(
        "{:?}\n{:?}\n{:?}",
        model::find_layers(config),
        model::code_findings(config),
        model::layer_tree(config)
    )
}

fn same_readings(text: &str, what: &str) {
    let value: Value = serde_json::from_str(text).unwrap();
    let arena = bumpalo::Bump::new();
    let node = json_tree::parse(text, &arena).unwrap();
    assert_eq!(node.to_value(), value, "{what}: the trees differ");
    assert_eq!(readings(&node), readings(&value), "{what}");
}

#[test]
fn both_trees_read_every_fixture_alike() {
    let mut all = Vec::new();
    for d in [
        "testdata/fixtures",
        "testdata/refusals",
        "testdata/fuzz-regressions",
    ] {
        archives(&root().join(d), &mut all);
    }
    let mut sites = 0;
    for path in &all {
        let Ok(mut a) = Archive::open(path) else {
            continue;
        };
        let Ok(bytes) = a.read_member(archive::CONFIG, archive::MAX_CONFIG_BYTES) else {
            continue;
        };
        let text = String::from_utf8(bytes).unwrap();
        same_readings(&text, &path.display().to_string());
        let value: Value = serde_json::from_str(&text).unwrap();
        if let Ok((n, d)) = model::find_layers(&value) {
            sites += n.len() + d.len();
        }
        // The same config with every key escaped (no key borrows from the
        // text), and with a decoy member written before each real one
        // (duplicate keys: the last value wins, at the first position).
        let escaped = text.replace("\"class_name\"", "\"class\\u005fname\"");
        same_readings(&escaped, &format!("{} (escaped keys)", path.display()));
        let decoyed = text.replace(
            "\"class_name\": ",
            "\"class_name\": \"Decoy\", \"class_name\": ",
        );
        same_readings(&decoyed, &format!("{} (duplicate keys)", path.display()));
    }
    assert!(all.len() >= 100, "only {} archives found", all.len());
    assert!(
        sites >= 50,
        "only {sites} Normalization/Discretization sites read"
    );
}
