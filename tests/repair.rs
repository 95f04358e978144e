//! The repair contract, on every committed real-Keras fixture: the right
//! weights group, bit-exact embedded values, nothing else changed,
//! idempotent and deterministic output, the input never written.

mod common;

use std::fs;
use std::path::Path;

use common::*;
use krepair::view::config::{find_layers, find_normalizations};
use krepair::view::json_span;
use serde_json::Value;

const POLICIES: [&str; 3] = ["adapted", "identity", "auto"];

fn chosen(f: &Fixture, policy: &str) -> String {
    if policy == "auto" {
        f.expected.auto.clone()
    } else {
        policy.to_string()
    }
}

/// The layer entry of the output config at `config_path`.
fn layer_entry<'a>(config: &'a Value, config_path: &str) -> &'a Value {
    let sites = find_normalizations(config).unwrap();
    let site = sites
        .iter()
        .find(|s| s.config_path == config_path)
        .unwrap_or_else(|| panic!("no layer {config_path}"));
    site.pointer.iter().fold(config, |v, seg| match seg {
        json_span::Seg::Key(k) => &v[k.as_str()],
        json_span::Seg::Index(i) => &v[*i],
    })
}

/// The output config with every embedded mean/variance put back to null,
/// and every embedded Discretization's bin_boundaries and num_bins put
/// back, must be the input config, byte for byte.
fn assert_only_stats_changed(input_cfg: &str, output_cfg: &str, tag: &str) {
    let out: Value = serde_json::from_str(output_cfg).unwrap();
    let orig: Value = serde_json::from_str(input_cfg).unwrap();
    let mut edits = Vec::new();
    let (_, discs) = find_layers(&out).unwrap();
    for d in discs {
        let at = |v: &Value| {
            d.pointer
                .iter()
                .fold(v, |v, seg| match seg {
                    json_span::Seg::Key(k) => &v[k.as_str()],
                    json_span::Seg::Index(i) => &v[*i],
                })
                .clone()
        };
        let (before, after) = (at(&orig), at(&out));
        if before["config"]["bin_boundaries"].is_null()
            && !after["config"]["bin_boundaries"].is_null()
        {
            for key in ["bin_boundaries", "num_bins"] {
                let mut p = d.pointer.clone();
                p.extend([
                    json_span::Seg::Key("config".into()),
                    json_span::Seg::Key(key.into()),
                ]);
                edits.push((
                    json_span::value_span(output_cfg, &p).unwrap(),
                    before["config"][key].to_string(),
                ));
            }
        }
    }
    for s in find_normalizations(&out).unwrap() {
        let entry = s.pointer.iter().fold(&out, |v, seg| match seg {
            json_span::Seg::Key(k) => &v[k.as_str()],
            json_span::Seg::Index(i) => &v[*i],
        });
        let orig: Value = serde_json::from_str(input_cfg).unwrap();
        let orig_entry = s.pointer.iter().fold(&orig, |v, seg| match seg {
            json_span::Seg::Key(k) => &v[k.as_str()],
            json_span::Seg::Index(i) => &v[*i],
        });
        if orig_entry["config"]["mean"].is_null() && !entry["config"]["mean"].is_null() {
            for key in ["mean", "variance"] {
                let mut p = s.pointer.clone();
                p.extend([
                    json_span::Seg::Key("config".into()),
                    json_span::Seg::Key(key.into()),
                ]);
                edits.push((
                    json_span::value_span(output_cfg, &p).unwrap(),
                    "null".to_string(),
                ));
            }
        }
    }
    assert_eq!(
        json_span::splice(output_cfg, edits),
        input_cfg,
        "{tag}: config bytes beyond the statistics changed"
    );
}

#[test]
fn every_fixture_every_policy() {
    let tmp = tempfile::tempdir().unwrap();
    for f in fixtures() {
        for policy in POLICIES {
            let tag = format!("{} --stats {policy}", f.tag());
            let input = f.archive();
            let before = tree_hash(&input);
            let out = tmp.path().join(format!(
                "{}-{}-{policy}",
                f.expected.keras_version, f.expected.case
            ));
            let report_path = tmp.path().join("report.json");
            // For the Keras that wrote it: the rewrites between Keras 3
            // versions (which rewrite config.json whole) are
            // tests/keras3.rs's.
            let v = &f.expected.keras_version;
            let load_in = if v.starts_with("3.") {
                v.splitn(3, '.').take(2).collect::<Vec<_>>().join(".")
            } else {
                "all".to_string()
            };
            let o = krepair(&[
                &"--quiet",
                &"--load-in",
                &load_in,
                &"--stats",
                &policy,
                &"--report",
                &report_path,
                &input,
                &out,
            ]);
            assert_eq!(code(&o), 0, "{tag}: {}", stderr(&o));
            assert_eq!(tree_hash(&input), before, "{tag}: input was modified");
            let report: Value =
                serde_json::from_str(&fs::read_to_string(&report_path).unwrap()).unwrap();

            let in_members = members(&input);
            let out_members = members(&out);
            let names = |m: &[(String, Vec<u8>)]| m.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
            assert_eq!(
                names(&in_members),
                names(&out_members),
                "{tag}: member list"
            );
            assert_eq!(
                member(&input, "metadata.json"),
                member(&out, "metadata.json"),
                "{tag}"
            );

            let in_cfg = String::from_utf8(member(&input, "config.json")).unwrap();
            let out_cfg = String::from_utf8(member(&out, "config.json")).unwrap();
            assert_only_stats_changed(&in_cfg, &out_cfg, &tag);
            let out_json: Value = serde_json::from_str(&out_cfg).unwrap();

            let weights = tempfile::NamedTempFile::new().unwrap();
            fs::write(weights.path(), member(&out, "model.weights.h5")).unwrap();
            let wf = fs::File::open(weights.path()).unwrap();
            let len = wf.metadata().unwrap().len();
            let w = krepair::weights::Weights::open_at(&wf, 0, len, "out", false).unwrap();

            let mut changed = false;
            for l in &f.expected.layers {
                let r = report["layers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|r| r["config_path"] == l.config_path.as_str())
                    .unwrap_or_else(|| panic!("{tag}: {} not in report", l.config_path));
                if l.mode != "adapt" {
                    assert_eq!(r["status"], "already-explicit", "{tag}");
                    continue;
                }
                let group = l.weights_group.as_deref().unwrap();
                assert_eq!(
                    r["weights_group"], group,
                    "{tag}: {} mapped wrong",
                    l.config_path
                );
                let shape = l.stats_shape.clone().unwrap();
                let n: usize = shape.iter().product();
                let (want_mean, want_var) = match chosen(&f, policy).as_str() {
                    "adapted" => (
                        flat_f32(l.mean.as_ref().unwrap()),
                        flat_f32(l.variance.as_ref().unwrap()),
                    ),
                    _ => (vec![0.0f32; n], vec![1.0f32; n]),
                };
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                let entry = layer_entry(&out_json, &l.config_path);
                match l.storage.as_deref() {
                    Some("config") => {
                        changed = true;
                        assert_eq!(r["status"], "repaired", "{tag}");
                        let m = &entry["config"]["mean"];
                        assert_eq!(bits(&flat_f32(m)), bits(&want_mean), "{tag}: embedded mean");
                        assert_eq!(
                            bits(&flat_f32(&entry["config"]["variance"])),
                            bits(&want_var),
                            "{tag}"
                        );
                        if shape.is_empty() {
                            assert!(m.is_number(), "{tag}: axis=None must embed a bare number");
                        } else {
                            assert_eq!(
                                m.as_array().unwrap().len(),
                                shape[0],
                                "{tag}: nested shape"
                            );
                        }
                        assert!(
                            w.datasets(group).unwrap().is_empty(),
                            "{tag}: datasets left in {group}"
                        );
                    }
                    Some("variables") => {
                        assert!(
                            entry["config"]["mean"].is_null(),
                            "{tag}: non-trailing layer must stay adapt"
                        );
                        let m = w.read_f32(&format!("{group}/0"), 1 << 20).unwrap();
                        let v = w.read_f32(&format!("{group}/1"), 1 << 20).unwrap();
                        assert_eq!(m.shape, shape, "{tag}");
                        assert_eq!(bits(&m.data), bits(&want_mean), "{tag}: mean in variables");
                        assert_eq!(
                            bits(&v.data),
                            bits(&want_var),
                            "{tag}: variance in variables"
                        );
                        assert_eq!(w.datasets(group).unwrap().len(), 3, "{tag}");
                        let stored_is_target = bits(&flat_f32(l.mean.as_ref().unwrap()))
                            == bits(&want_mean)
                            && bits(&flat_f32(l.variance.as_ref().unwrap())) == bits(&want_var);
                        changed |= !stored_is_target;
                        let want_status = if stored_is_target {
                            "unchanged"
                        } else {
                            "repaired"
                        };
                        assert_eq!(r["status"], want_status, "{tag}");
                        assert!(r["findings"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .any(|x| x["code"] == "kept-in-variables"));
                    }
                    other => panic!("{tag}: storage {other:?}"),
                }
            }
            // Adapt-mode Discretization layers get their boundaries
            // (tests/discretization.rs checks them bit for bit).
            changed |= !f.expected.discretizations.is_empty();
            let want_outcome = if changed {
                "repaired"
            } else {
                "nothing-to-repair"
            };
            assert_eq!(report["outcome"], want_outcome, "{tag}");
            if !changed && f.expected.form == "zip" {
                assert_eq!(
                    sha(&out),
                    sha(&input),
                    "{tag}: nothing to repair must give an exact copy"
                );
            }
            for m in report["members"].as_array().unwrap() {
                let name = m["name"].as_str().unwrap();
                let differs = member(&input, name) != member(&out, name);
                assert_eq!(m["changed"], differs, "{tag}: member {name} change flag");
            }
        }
    }
}

#[test]
fn repairs_are_deterministic_and_idempotent() {
    let tmp = tempfile::tempdir().unwrap();
    let mut copied = 0;
    let mut followed = 0;
    for f in fixtures() {
        let tag = f.tag();
        let a = tmp.path().join("a.keras");
        let b = tmp.path().join("b.keras");
        let c = tmp.path().join("c.keras");
        for p in [&a, &b, &c] {
            let _ = fs::remove_dir_all(p);
            let _ = fs::remove_file(p);
        }
        let ra = tmp.path().join("ra.json");
        let rb = tmp.path().join("rb.json");
        // One run lets the kernel copy the pages HDF5 did not write, the
        // other streams every byte through the process: the same bytes.
        let o = krepair_env(
            &[("KREPAIR_TIMINGS", "1")],
            &[&"-q", &"--report", &ra, &f.archive(), &a],
        );
        assert_eq!(code(&o), 0, "{tag}");
        copied += kernel_copied(&o);
        followed += stderr(&o).contains("hashed as they were written") as usize;
        let o = krepair_env(
            &[("KREPAIR_STREAM_WRITES", "1"), ("KREPAIR_TIMINGS", "1")],
            &[&"-q", &"--report", &rb, &f.archive(), &b],
        );
        assert_eq!(code(&o), 0, "{tag}");
        assert_eq!(kernel_copied(&o), 0, "{tag}: streamed, yet copied");
        assert_eq!(
            tree_hash(&a),
            tree_hash(&b),
            "{tag}: two runs gave different bytes"
        );
        let strip = |p: &Path, out: &Path| {
            fs::read_to_string(p)
                .unwrap()
                .replace(&out.display().to_string(), "OUT")
        };
        assert_eq!(
            strip(&ra, &a),
            strip(&rb, &b),
            "{tag}: two runs gave different reports"
        );
        // A second pass over the output finds nothing and copies it exactly.
        let rc = tmp.path().join("rc.json");
        assert_eq!(
            code(&krepair(&[&"-q", &"--report", &rc, &a, &c])),
            0,
            "{tag}"
        );
        assert_eq!(
            tree_hash(&a),
            tree_hash(&c),
            "{tag}: repairing the output changed it"
        );
        let report: Value = serde_json::from_str(&fs::read_to_string(&rc).unwrap()).unwrap();
        assert_eq!(report["outcome"], "nothing-to-repair", "{tag}");
        let o = krepair(&[&"--dry-run", &a]);
        assert_eq!(
            code(&o),
            0,
            "{tag}: dry run on a repaired output must find nothing"
        );
    }
    assert!(
        copied >= 20 * 4096,
        "the kernel copied only {copied} bytes of unwritten pages in all"
    );
    // The output's hash followed the writer (the reports' sha256 of both
    // ways are compared above, and checked against the file's in
    // report_hashes_both_files_and_checksums_every_member).
    assert!(
        followed >= 20,
        "the output was hashed as it was written in only {followed} repairs"
    );
}

#[test]
fn auto_follows_the_saving_version_and_signature() {
    for f in fixtures() {
        let o = krepair(&[&"--dry-run", &"--report", &"-", &f.archive()]);
        let report: Value = serde_json::from_slice(&o.stdout).unwrap();
        for (l, r) in f
            .expected
            .layers
            .iter()
            .zip(report["layers"].as_array().unwrap())
        {
            if l.mode != "adapt" {
                continue;
            }
            let codes: Vec<&str> = r["findings"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x["code"].as_str().unwrap())
                .collect();
            assert_eq!(
                r["policy"]["chosen"],
                f.expected.auto.as_str(),
                "{}",
                f.tag()
            );
            let legacy_era = f.expected.keras_version.starts_with("3.5");
            assert_eq!(
                codes.contains(&"legacy-weights-signature"),
                f.expected.legacy_signature,
                "{}",
                f.tag()
            );
            assert_eq!(
                codes.contains(&"ambiguous-legacy-load"),
                legacy_era && !f.expected.legacy_signature,
                "{}: {codes:?}",
                f.tag()
            );
        }
    }
}

#[test]
fn report_records_the_stored_statistics_exactly() {
    let f = fixture("3.5", "two_norms");
    let o = krepair(&[&"--dry-run", &"--report", &"-", &f.archive()]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["schema_version"], 2);
    assert_eq!(report["keras_version"], "3.5.0");
    assert_eq!(report["outcome"], "would-repair");
    assert!(report["output"].is_null());
    // A dry run reads only what it needs: no hash of the whole input.
    assert!(report["input"]["sha256"].is_null());
    for (l, r) in f
        .expected
        .layers
        .iter()
        .zip(report["layers"].as_array().unwrap())
    {
        assert_eq!(r["stored"]["mean"], *l.mean.as_ref().unwrap());
        assert_eq!(r["stored"]["variance"], *l.variance.as_ref().unwrap());
        assert_eq!(r["stored"]["count"], l.count.unwrap());
        let std: Vec<f32> = flat_f32(&r["stored"]["std"]);
        let var = flat_f32(l.variance.as_ref().unwrap());
        assert_eq!(std, var.iter().map(|v| v.sqrt()).collect::<Vec<_>>());
        assert_eq!(r["status"], "would-repair");
    }
}

/// The CRC-32 of every member of a zip, by name, as the report writes it.
fn crcs(path: &Path) -> Vec<(String, String)> {
    let mut z = zip::ZipArchive::new(fs::File::open(path).unwrap()).unwrap();
    (0..z.len())
        .map(|i| {
            let m = z.by_index(i).unwrap();
            (m.name().unwrap().to_string(), format!("{:08x}", m.crc32()))
        })
        .collect()
}

#[test]
fn report_hashes_both_files_and_checksums_every_member() {
    let f = fixture("3.5", "two_norms");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.keras");
    let o = krepair(&[&"-q", &"--report", &"-", &f.archive(), &out]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["input"]["sha256"], sha(&f.archive()));
    assert_eq!(report["output"]["sha256"], sha(&out));
    let (before, after) = (crcs(&f.archive()), crcs(&out));
    let members = report["members"].as_array().unwrap();
    assert_eq!(members.len(), before.len());
    for ((m, b), a) in members.iter().zip(&before).zip(&after) {
        assert_eq!(m["name"], b.0.as_str());
        assert_eq!(m["crc32_before"], b.1.as_str(), "{}", b.0);
        assert_eq!(m["crc32_after"], a.1.as_str(), "{}", b.0);
        let rewritten = b.0 == "config.json" || b.0 == "model.weights.h5";
        assert_eq!(m["changed"], rewritten, "{}", b.0);
        assert_eq!(b.1 != a.1, rewritten, "{}", b.0);
    }
}

#[test]
fn compressed_weights_are_repaired_like_stored_ones() {
    // Keras stores the weights uncompressed, and krepair edits them in
    // place; a re-zipped archive with a deflated weights member takes the
    // inflate-to-a-temporary-file route and must give the same content.
    let f = fixture("3.15", "two_norms");
    let tmp = tempfile::tempdir().unwrap();
    let deflated = tmp.path().join("deflated.keras");
    {
        let mut w = zip::ZipWriter::new(fs::File::create(&deflated).unwrap());
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (n, b) in members(&f.archive()) {
            w.start_file(n.as_str(), opts).unwrap();
            std::io::Write::write_all(&mut w, &b).unwrap();
        }
        w.finish().unwrap();
    }
    let (a, b) = (tmp.path().join("a.keras"), tmp.path().join("b.keras"));
    assert_eq!(code(&krepair(&[&"-q", &f.archive(), &a])), 0);
    let o = krepair(&[&"-q", &deflated, &b]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(members(&a), members(&b));
    let mut z = zip::ZipArchive::new(fs::File::open(&b).unwrap()).unwrap();
    assert_eq!(
        z.by_name("model.weights.h5").unwrap().compression(),
        zip::CompressionMethod::Deflated
    );
    assert_ne!(
        member(&a, "model.weights.h5"),
        member(&f.archive(), "model.weights.h5")
    );
}
