//! Output failures the operating system causes: a full disk, a read-only
//! directory, and `kill -9` in the middle of a write. Nothing partial may
//! appear at the output path. These tests mount small tmpfs filesystems, so
//! they need root (CI runs as root).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

struct Mount(PathBuf);

impl Mount {
    fn tmpfs(dir: &Path, opts: &str) -> Mount {
        fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
            .arg(dir)
            .status()
            .expect("mount(8) must exist");
        assert!(
            st.success(),
            "mounting a tmpfs failed: these tests need root (CI runs as root)"
        );
        Mount(dir.to_path_buf())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A repairable archive padded with a stored asset of `pad` bytes.
fn padded(dir: &Path, pad: usize) -> PathBuf {
    let mut m = members(&fixture("3.15", "axis_last").archive());
    m.push(("assets/padding.bin".into(), vec![0x5a; pad]));
    let p = dir.join("in.keras");
    write_zip(&p, &m);
    p
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn a_full_disk_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let input = padded(tmp.path(), 256 << 10);
    let before = sha(&input);
    let _m = Mount::tmpfs(&tmp.path().join("small"), "size=64k");
    let out = tmp.path().join("small/out.keras");
    let o = krepair(&[&"-q", &input, &out]);
    let err = stderr(&o);
    assert_eq!(code(&o), 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(
        entries(&tmp.path().join("small")).is_empty(),
        "left behind: {:?}",
        entries(&tmp.path().join("small"))
    );
    assert_eq!(sha(&input), before);
}

#[test]
fn a_read_only_directory_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let input = padded(tmp.path(), 1024);
    let _m = Mount::tmpfs(&tmp.path().join("ro"), "ro,size=64k");
    let out = tmp.path().join("ro/out.keras");
    let o = krepair(&[&"-q", &input, &out]);
    let err = stderr(&o);
    assert_eq!(code(&o), 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(entries(&tmp.path().join("ro")).is_empty());
}

#[test]
fn kill_9_during_a_write_never_leaves_a_partial_output() {
    let tmp = tempfile::tempdir().unwrap();
    let input = padded(tmp.path(), 128 << 20);
    let outdir = tmp.path().join("out");
    fs::create_dir(&outdir).unwrap();
    let out = outdir.join("model.keras");
    let mut child = Command::new(env!("CARGO_BIN_EXE_krepair"))
        .args(["-q"])
        .arg(&input)
        .arg(&out)
        .spawn()
        .unwrap();
    // Wait until the temporary output exists and is growing, then kill.
    let start = Instant::now();
    let tmp_file = loop {
        if let Some(n) = entries(&outdir)
            .into_iter()
            .find(|n| n.starts_with(".krepair-"))
        {
            let p = outdir.join(&n);
            if fs::metadata(&p).map(|m| m.len() > 0).unwrap_or(false) {
                break p;
            }
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "krepair finished before it could be killed"
        );
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no temporary output appeared"
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        !out.exists(),
        "a killed run left something at the output path"
    );
    // What is left is a hidden `.krepair-*.tmp` file, never the output name.
    for n in entries(&outdir) {
        assert!(
            n.starts_with(".krepair-") && n.ends_with(".tmp"),
            "unexpected file {n}"
        );
    }
    assert!(tmp_file
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .ends_with(".tmp"));
    // A new run is not confused by the leftover and succeeds.
    let o = krepair(&[&"-q", &input, &out]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let z = zip::ZipArchive::new(fs::File::open(&out).unwrap()).unwrap();
    assert_eq!(z.len(), 4);
}
