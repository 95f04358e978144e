//! Inspection: open an archive, find its Normalization layers, map each to
//! its weights, read and check the statistics, and plan what to change.
//!
//! A dry run stops here; a repair applies the plan ([`crate::run::single`]).
//! Running it again on a repaired output must plan nothing, which is how
//! the output is verified.

use std::collections::{HashMap, HashSet};
use std::io::BufWriter;

use serde_json::Value;

use crate::error::{Error, Result, Verb};
use crate::plan::{finding, Code, Finding, Policy, Rule};
use crate::report::{DiscretizationReport, LayerReport, Status};
use crate::source::keras::{self as archive, Archive, Form};
use crate::view::config::{self as model, ShapeFrom};
use crate::weights::{Elem, Weights};

use crate::passes::normalization::{analyze, count_within};
pub use crate::plan::Action;

/// Everything inspection learned about one archive.
pub struct Inspection {
    /// The opened archive.
    pub archive: Archive,
    /// `keras_version` from metadata.json.
    pub keras_version: Option<String>,
    /// The text of config.json (migrated, when [`Check::migrate`]).
    pub config_text: String,
    /// No object of `config_text` names a key twice (known when it was
    /// parsed read-only or written from a migrated tree; false when not
    /// known).
    pub config_keys_unique: bool,
    /// The migration's rewrites of config.json (with [`Check::migrate`]).
    pub migration: Vec<crate::passes::migrate::Rewrite>,
    /// One entry per Normalization layer.
    pub layers: Vec<LayerReport>,
    /// One entry per Discretization layer.
    pub discretizations: Vec<DiscretizationReport>,
    /// Archive-level findings.
    pub findings: Vec<Finding>,
    /// The changes a repair makes.
    pub actions: Vec<Action>,
    /// model.weights.h5, open (for editing when [`Check::editable`]).
    pub weights: Option<Weights>,
    /// Made from a legacy HDF5 model file ([`Check::from_h5`]).
    pub from_h5: bool,
}

/// How thoroughly to inspect.
#[derive(Clone, Copy, Debug)]
pub struct Check {
    /// Read every member except the weights through, checking its CRC-32
    /// (or, in a directory, computing it). The caller checks the weights'
    /// bytes (`repair` does it while hashing the input); a dry run reads
    /// only what it needs.
    pub members: bool,
    /// Walk every HDF5 object and refuse unsafe structure
    /// ([`Weights::check_structure`]).
    pub structure: bool,
    /// Open the weights for editing (the edits stay in memory).
    pub editable: bool,
    /// Migrate a tf.keras 2.x config to Keras 3 ([`crate::passes::migrate`]).
    pub migrate: bool,
    /// The archive was made from a legacy HDF5 model file
    /// ([`crate::view::legacy_h5`]): its config is in the legacy form
    /// whatever Keras 2 wrote it, and its weights in Keras 3's layout.
    pub from_h5: bool,
    /// The Keras 3 versions the output must load in (`--load-in`), as a
    /// [`crate::passes::keras3::Targets`] mask.
    pub load_in: u32,
}

impl Check {
    /// A dry run: only what the plan needs, plus the structure walk.
    pub const DRY_RUN: Check = Check {
        members: false,
        structure: true,
        editable: false,
        migrate: false,
        from_h5: false,
        load_in: crate::passes::keras3::Targets::ALL,
    };
    /// The input of a repair (which walks the structure beside its work).
    pub const REPAIR: Check = Check {
        members: true,
        structure: false,
        editable: true,
        migrate: false,
        from_h5: false,
        load_in: crate::passes::keras3::Targets::ALL,
    };
    /// A repair's own output, re-read to verify it.
    pub const VERIFY: Check = Check {
        members: true,
        structure: false,
        editable: false,
        migrate: false,
        from_h5: false,
        load_in: crate::passes::keras3::Targets::ALL,
    };
}

impl Check {
    /// The same check, migrating or not.
    pub const fn migrating(self, migrate: bool) -> Check {
        Check { migrate, ..self }
    }

    /// The same check, for outputs that must load in the Keras 3 versions
    /// of `mask`.
    pub const fn loading_in(self, load_in: u32) -> Check {
        Check { load_in, ..self }
    }

    /// The same check, of an archive made from a legacy HDF5 file or not.
    pub const fn of_h5(self, from_h5: bool) -> Check {
        Check { from_h5, ..self }
    }
}

impl Inspection {
    /// Does the output differ from the input (a layer to repair, or a
    /// migrated config)?
    pub fn changes(&self) -> bool {
        !self.actions.is_empty() || !self.migration.is_empty()
    }

    /// The first refused layer, if any: (config path, reason).
    pub fn refusal(&self) -> Option<(&str, &str)> {
        let norm = self
            .layers
            .iter()
            .find(|l| l.status == Status::Refused)
            .map(|l| (l.config_path.as_str(), l.reason.as_deref()));
        let disc = || {
            self.discretizations
                .iter()
                .find(|l| l.status == Status::Refused)
                .map(|l| (l.config_path.as_str(), l.reason.as_deref()))
        };
        norm.or_else(disc).map(|(p, r)| (p, r.unwrap_or("")))
    }
}

/// Parse a JSON member (`metadata.json` or `config.json`) of `archive`.
pub(crate) fn parse_json(bytes: &[u8], label: &str, archive: &Archive) -> Result<Value> {
    let text = std::str::from_utf8(bytes).map_err(|e| not_json(archive, label, "UTF-8", e))?;
    serde_json::from_str(text).map_err(|e| not_json(archive, label, "valid JSON", e))
}

/// The error for a JSON member (`label`) of `archive` that is not `what`.
fn not_json(archive: &Archive, label: &str, what: &str, e: impl std::fmt::Display) -> Error {
    let kind = if label == archive::METADATA {
        crate::error::Malformed::Metadata
    } else {
        crate::error::Malformed::Config
    };
    Error::format(&archive.path, kind, format!("{label} is not {what}: {e}"))
}

/// The structure walk of the input's weights, running on its own
/// read-only view while the archive is read ([`inspect_walked`]); joined
/// when dropped, so no walk outlives its inspection.
pub struct Walk(Option<std::thread::JoinHandle<Result<()>>>);

impl Walk {
    /// Walk the weights stored at `range` of `file` in the background.
    pub fn spawn(
        file: crate::source::keras::InPlace,
        range: std::ops::Range<u64>,
        label: String,
    ) -> Walk {
        Walk(Some(std::thread::spawn(move || {
            Weights::open_in_place(&file, range, &label, false)?.check_structure()
        })))
    }

    /// Its verdict (once; later calls say `Ok`).
    pub fn verdict(&mut self, path: &std::path::Path) -> Result<()> {
        match self.0.take() {
            Some(h) => h.join().unwrap_or_else(|_| {
                Err(Error::Internal {
                    path: path.to_path_buf(),
                    problem: "internal error: the HDF5 structure check panicked".into(),
                })
            }),
            None => Ok(()),
        }
    }
}

impl Drop for Walk {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            let _ = h.join();
        }
    }
}

/// Inspect the archive at `path` under `policy`.
pub fn inspect(path: &std::path::Path, policy: Policy, check: Check) -> Result<Inspection> {
    crate::progress::step("reading the zip container");
    inspect_walked(Archive::open(path)?, policy, check, None)
}

/// [`inspect`], with the structure walk of the weights begun by the
/// caller. The weights are never opened for editing before their
/// structure has passed the walk (this one, or one made here): HDF5 is
/// not safe to modify, or even to close read-write, once it has loaded a
/// corrupt object (a bad object header made HDF5 1.10 free an invalid
/// pointer when the editable file was closed; found by the fuzzer,
/// testdata/fuzz-regressions/hdf5-bad-object-header-edit.keras).
pub fn inspect_walked(
    mut archive: Archive,
    policy: Policy,
    check: Check,
    mut walk: Option<Walk>,
) -> Result<Inspection> {
    let path = archive.path.clone();
    let path = path.as_path();
    require_config(&archive)?;
    let keras_version = keras_version(&mut archive)?;
    let mut findings = Vec::new();
    if keras_version.is_none() {
        findings.push(finding(
            Code::UnknownKerasVersion,
            "metadata.json is missing or names no keras_version: the saving Keras version is unknown",
        ));
    }
    let Config {
        text: config_text,
        keys_unique: config_keys_unique,
        saved,
        mut migration,
        optimizer,
        sites,
        discs,
    } = read_config(&mut archive, keras_version.as_deref(), check, &mut findings)?;

    // tf.keras 2.13 and 2.14 keep their layers' weights in another layout
    // (see [`crate::passes::migrate::legacy_layout`]); an archive made
    // from a legacy HDF5 file has Keras 3's.
    let numbering =
        crate::passes::migrate::numbering_of(keras_version.as_deref()).filter(|_| !check.from_h5);
    let editable = check.editable || (check.migrate && numbering.is_some());
    let (mut weights, walked) = open_weights(&mut archive, editable, walk.as_mut())?;
    if check.members {
        check_other_members(&mut archive)?;
    }
    // A walk begun beside this inspection gives its verdict below.
    if check.structure && !walked && walk.is_none() {
        crate::progress::step("walking the HDF5 structure of model.weights.h5");
        weights.check_structure()?;
    }
    if let Some(w) = walk.as_mut() {
        w.verdict(path)?;
    }
    let mut actions = Vec::new();
    // The renames into Keras 3's layout: made here when migrating; when
    // repairing, the layout is kept and Normalization groups are found
    // through them.
    let mut legacy = Vec::new();
    if let Some(numbering) =
        numbering.filter(|_| check.migrate || !sites.is_empty() || !discs.is_empty())
    {
        let config = saved_config(saved, &config_text, path)?;
        let layout = Layout {
            path,
            config: &config,
            numbering,
            keras_version: keras_version.as_deref(),
        };
        if check.migrate {
            legacy_assets(&archive, &layout)?;
            migrate_layout(&layout, &mut weights, &mut migration, &mut actions)?;
        } else {
            legacy = repair_layout(&layout, &weights, &discs)?;
        }
    }
    let (layers, discretizations) = run_layer_passes(
        &sites,
        &discs,
        &weights,
        keras_version.as_deref(),
        policy,
        &legacy,
        &mut actions,
    )?;
    if let Some(o) = &optimizer {
        plan_optimizer(
            o,
            &weights,
            path,
            &mut findings,
            &mut actions,
            &mut migration,
        )?;
    }
    Ok(Inspection {
        archive,
        keras_version,
        config_text,
        config_keys_unique,
        migration,
        layers,
        discretizations,
        findings,
        actions,
        weights: Some(weights),
        from_h5: check.from_h5,
    })
}

/// The config as saved, which the weights layout is matched against, in
/// the form the matcher reads: the text the migration kept aside, or (a
/// repair) the config's own text.
fn saved_config(saved: Option<String>, text: &str, path: &std::path::Path) -> Result<Value> {
    serde_json::from_str(saved.as_deref().unwrap_or(text)).map_err(|e| {
        Error::format(
            path,
            crate::error::Malformed::Config,
            format!("config.json: {e}"),
        )
    })
}

/// Refuse an archive without `config.json` (a directory without it, and
/// without weights, is not a `.keras` directory at all).
fn require_config(archive: &Archive) -> Result<()> {
    if archive.member(archive::CONFIG).is_some() {
        return Ok(());
    }
    if archive.member(archive::WEIGHTS).is_none() && archive.form == Form::Directory {
        return Err(Error::format(
            &archive.path,
            crate::error::Malformed::NotAnArchive,
            "not a .keras directory: no config.json",
        ));
    }
    Err(Error::format(
        &archive.path,
        crate::error::Malformed::MissingMember,
        "no config.json in the archive",
    ))
}

/// `keras_version` from `metadata.json` (None when the member is missing
/// or names none).
fn keras_version(archive: &mut Archive) -> Result<Option<String>> {
    if archive.member(archive::METADATA).is_none() {
        return Ok(None);
    }
    let bad = |archive: &Archive, what: &str| {
        Error::format(
            &archive.path,
            crate::error::Malformed::Metadata,
            format!("metadata.json{what}"),
        )
    };
    let bytes = archive.read_member(archive::METADATA, archive::MAX_METADATA_BYTES)?;
    let meta = parse_json(&bytes, "metadata.json", archive)?;
    if !meta.is_object() {
        return Err(bad(archive, " is not a JSON object"));
    }
    match meta.get("keras_version") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad(archive, ": keras_version is not a string")),
    }
}

/// What reading `config.json` (and migrating it) gives.
struct Config {
    /// The text of config.json (migrated, when asked).
    text: String,
    /// No object of `text` names a key twice (see
    /// [`Inspection::config_keys_unique`]).
    keys_unique: bool,
    /// The text as saved, where the weights layout must be matched against
    /// it (tf.keras 2.12-2.14, migrating): kept as text, and parsed once
    /// the migrated tree is gone, so the two trees never coexist (a tree
    /// takes about ten times its text).
    saved: Option<String>,
    /// The migration's rewrites.
    migration: Vec<crate::passes::migrate::Rewrite>,
    /// The optimizer whose variables the migration must lay out.
    optimizer: Option<crate::passes::migrate::OptimizerVariables>,
    /// The Normalization layers.
    sites: Vec<model::NormSite>,
    /// The Discretization layers.
    discs: Vec<model::DiscSite>,
}

/// Read `config.json`, migrate it when `check.migrate`, and find its
/// Normalization and Discretization layers (findings about code go to
/// `findings`).
fn read_config(
    archive: &mut Archive,
    keras_version: Option<&str>,
    check: Check,
    findings: &mut Vec<Finding>,
) -> Result<Config> {
    crate::progress::step("reading config.json");
    let config_bytes = archive.read_member(archive::CONFIG, archive::MAX_CONFIG_BYTES)?;
    let text = String::from_utf8(config_bytes)
        .map_err(|e| not_json(archive, archive::CONFIG, "UTF-8", e.utf8_error()))?;
    let bad_config = |e: String| {
        Error::format(
            &archive.path,
            crate::error::Malformed::Config,
            format!("config.json: {e}"),
        )
    };
    if !check.migrate && !crate::passes::keras3::applies(keras_version) {
        // Read only: a tree borrowing from the text, in an arena
        // (json_tree).
        let arena = bumpalo::Bump::new();
        let (config, unique) = crate::view::json_tree::parse_checked(&text, &arena)
            .map_err(|e| not_json(archive, archive::CONFIG, "valid JSON", e))?;
        let (sites, discs) = layers_of(&config, findings).map_err(bad_config)?;
        return Ok(Config {
            keys_unique: unique,
            saved: None,
            migration: Vec::new(),
            optimizer: None,
            sites,
            discs,
            text,
        });
    }
    migrate_config(archive, text, keras_version, check, findings)
}

/// [`read_config`] when migrating: the migration rewrites the tree (a
/// `serde_json::Value`) first; the Normalization layers are then found,
/// and embedded, in the migrated config.
fn migrate_config(
    archive: &Archive,
    mut text: String,
    keras_version: Option<&str>,
    check: Check,
    findings: &mut Vec<Finding>,
) -> Result<Config> {
    let from_h5 = check.from_h5;
    let path = archive.path.as_path();
    let bad_config = |e: String| {
        Error::format(
            path,
            crate::error::Malformed::Config,
            format!("config.json: {e}"),
        )
    };
    // tf.keras named the weights groups of 2.12-2.14 after the classes it
    // saved, which migration may change (TFOpLambda): the layout is
    // matched against the config as saved, kept aside here.
    let saved = crate::passes::migrate::numbering_of(keras_version)
        .filter(|_| !from_h5)
        .map(|_| text.clone());
    let mut config = parse_json(text.as_bytes(), "config.json", archive)?;
    // The shapes the config declares for Normalization layers without a
    // build_config (tf.keras 2.12), before migration removes their
    // batch_input_shape.
    let mut declared = HashMap::new();
    if crate::passes::migrate::is_tf_keras(keras_version) {
        for s in model::find_normalizations(&config).map_err(bad_config)? {
            declared.insert(s.config_path, (s.input_shape, s.shape_from));
        }
    }
    crate::progress::step("planning the migration of config.json");
    let mut plan = crate::passes::migrate::plan_from(&mut config, keras_version, from_h5)
        .map_err(|r| refused(path, r, Verb::Migrate, None))?;
    if crate::passes::keras3::applies(keras_version) {
        crate::progress::step("planning the Keras 3 cross-version rewrites");
        let targets = crate::passes::keras3::Targets::from_mask(check.load_in);
        let k3 = crate::passes::keras3::plan(&mut config, keras_version, &targets);
        plan.rewrites.extend(k3.rewrites);
        findings.extend(crate::passes::keras3::findings(&targets, &k3.unreachable));
    }
    let mut keys_unique = false;
    if !plan.rewrites.is_empty() {
        text = serde_json::to_string(&config).map_err(|e| bad_config(e.to_string()))?;
        // Written from a map: each key once.
        keys_unique = true;
    }
    let (mut sites, discs) = layers_of(&config, findings).map_err(bad_config)?;
    // The parsed tree takes about ten times the text's size: let it go
    // before the weights are opened, on another thread (freeing a tree of
    // a few million nodes takes tens of milliseconds).
    drop_aside(config);
    for site in &mut sites {
        if let Some((shape, from)) = declared.remove(&site.config_path) {
            if site.shape_from == ShapeFrom::Unknown {
                (site.input_shape, site.shape_from) = (shape, from);
            }
        }
    }
    Ok(Config {
        text,
        keys_unique,
        saved,
        migration: plan.rewrites,
        optimizer: plan.optimizer,
        sites,
        discs,
    })
}

/// Open `model.weights.h5` (for editing when `editable`, and then only
/// once its structure has passed the walk: `walk`'s verdict, or a walk
/// made here). Returns the weights and whether the walk was done.
///
/// The weights are always checked, even when no layer needs them: an
/// archive is never handed back as healthy with a file Keras would refuse.
fn open_weights(
    archive: &mut Archive,
    editable: bool,
    walk: Option<&mut Walk>,
) -> Result<(Weights, bool)> {
    if archive.member(archive::WEIGHTS).is_none() {
        let what = if archive.member(archive::WEIGHTS_NPZ).is_some() {
            "weights are stored as model.weights.npz (pickled numpy), which krepair never loads"
        } else {
            "no model.weights.h5 in the archive"
        };
        return Err(Error::format(
            &archive.path,
            crate::error::Malformed::MissingMember,
            what,
        ));
    }
    crate::progress::step("opening model.weights.h5");
    let path = archive.path.clone();
    let label = format!("{}!{}", path.display(), archive::WEIGHTS);
    let step = || crate::progress::step("walking the HDF5 structure of model.weights.h5");
    match archive.in_place(archive::WEIGHTS) {
        // Renaming groups into Keras 3's layout edits the private mapping
        // (never the file), in a dry run too.
        Some((file, range)) => {
            if editable {
                step();
                match walk {
                    Some(w) => w.verdict(&path)?,
                    None => Weights::open_in_place(&file, range.clone(), &label, false)?
                        .check_structure()?,
                }
            }
            Ok((
                Weights::open_in_place(&file, range, &label, editable)?,
                editable,
            ))
        }
        None => {
            let tmp = Inflated::weights(archive)?;
            if editable {
                step();
                Weights::open_at(tmp.file.as_file(), 0, tmp.len, &label, false)?
                    .check_structure()?;
            }
            let weights = Weights::open_at(tmp.file.as_file(), 0, tmp.len, &label, editable)?;
            Ok((weights, editable))
        }
    }
}

/// Read every member but the config, the metadata and (in a zip) the
/// weights through, checking its CRC-32 (or, in a directory, computing
/// it). A repair checks a zip's weights while hashing the input.
fn check_other_members(archive: &mut Archive) -> Result<()> {
    let names: Vec<String> = archive
        .members
        .iter()
        .filter(|m| m.name != archive::WEIGHTS && !m.name.ends_with('/'))
        .filter(|m| m.name != archive::CONFIG && m.name != archive::METADATA)
        .map(|m| m.name.clone())
        .collect();
    for name in names {
        archive.check_member(&name)?;
    }
    if archive.form == Form::Directory {
        archive.check_member(archive::WEIGHTS)?;
    }
    Ok(())
}

/// What matching a tf.keras 2.12-2.14 weights layout needs.
struct Layout<'a> {
    /// The archive.
    path: &'a std::path::Path,
    /// config.json as saved.
    config: &'a Value,
    /// How that tf.keras numbered its layers.
    numbering: crate::passes::migrate::Numbering,
    /// The saving version.
    keras_version: Option<&'a str>,
}

impl Layout<'_> {
    /// The renames from the saved layout into Keras 3's (refusing to
    /// `verb`, after `what`, where the layout does not match the config).
    fn renames(
        &self,
        weights: &Weights,
        verb: Verb,
        what: Option<&str>,
    ) -> Result<Vec<crate::passes::migrate::Rename>> {
        crate::progress::step("matching the tf.keras weights groups to the config");
        crate::passes::migrate::legacy_layout(self.config, self.numbering, weights)
            .map_err(|r| refused(self.path, r, verb, what))
    }
}

/// Migrating: rename the weights groups into Keras 3's layout (in the
/// private mapping), each rename a rewrite.
fn migrate_layout(
    layout: &Layout,
    weights: &mut Weights,
    migration: &mut Vec<crate::passes::migrate::Rewrite>,
    actions: &mut Vec<Action>,
) -> Result<()> {
    let renames = layout.renames(weights, Verb::Migrate, None)?;
    for r in &renames {
        weights.rename(&r.parent, &r.from, &r.to)?;
        let at = |name: &str| crate::passes::migrate::join_path(&r.parent, name);
        migration.push(crate::passes::migrate::Rewrite {
            code: Rule::WeightsLayout,
            layer: String::new(),
            key: format!("{}:{}", archive::WEIGHTS, at(&r.from)),
            old: Value::from(at(&r.from)),
            new: Some(Value::from(at(&r.to))),
        });
    }
    if !renames.is_empty() {
        actions.push(Action::Renamed {
            count: renames.len(),
        });
    }
    Ok(())
}

/// Assets (an adapted lookup layer's vocabulary) that tf.keras 2.12 to
/// 2.14 saved under their weights layout (`assets/_layer_checkpoint_dependencies/...`),
/// where Keras 3 does not look: refused, their renaming not done yet.
fn legacy_assets(archive: &Archive, layout: &Layout) -> Result<()> {
    let legacy = archive
        .members
        .iter()
        .find(|m| m.name.starts_with("assets/_layer_checkpoint_dependencies/"));
    match legacy {
        Some(m) => Err(Error::Refused {
            path: layout.path.to_path_buf(),
            verb: Verb::Migrate,
            layer: "(the model)".into(),
            reason: format!(
                "`{}` is an asset in tf.keras {}'s layout, which Keras 3 does not read; moving assets into Keras 3's layout is not supported yet",
                m.name,
                layout.keras_version.unwrap_or("2.x")
            ),
        }),
        None => Ok(()),
    }
}

/// Repairing: keep the saved layout (the renames say where each layer's
/// group is), unless a repair would renumber a later layer.
fn repair_layout(
    layout: &Layout,
    weights: &Weights,
    discs: &[model::DiscSite],
) -> Result<Vec<crate::passes::migrate::Rename>> {
    let renames = layout.renames(
        weights,
        Verb::Repair,
        Some("the tf.keras weights layout does not match the config"),
    )?;
    // 2.12 and 2.13 number a layer with weights by twos: embedding one
    // Normalization's statistics (its weights go) would renumber the next
    // one, and tf.keras 2.13 could no longer load it. A Discretization
    // loses its one variable only when adapted: a later one with a
    // variable would be looked for one number lower (one without
    // variables reads nothing).
    let adapted_discs = discs.iter().any(|d| d.mode == model::Mode::Adapt);
    let renumbered = renames.iter().find(|r| {
        r.from.starts_with("normalization_")
            || (adapted_discs
                && r.from.starts_with("discretization_")
                && weights.has_datasets_under(&crate::passes::migrate::legacy_path(
                    &renames,
                    &crate::passes::migrate::join_path(&r.parent, &r.from),
                )))
    });
    if let Some(r) = renumbered {
        let old = crate::passes::migrate::join_path(&r.parent, &r.from);
        return Err(Error::Refused {
            path: layout.path.to_path_buf(),
            verb: Verb::Repair,
            layer: "(the model)".into(),
            reason: format!(
                "tf.keras {} numbers layers with weights by twos (keras #18830): embedding statistics (or bin boundaries) would renumber `{}`, and tf.keras {0} could not load the result; `krepair migrate` converts the archive to Keras 3's layout instead",
                layout.keras_version.unwrap_or("2.x"),
                crate::passes::migrate::legacy_path(&renames, &old)
            ),
        });
    }
    Ok(renames)
}

/// The Normalization and Discretization passes over every site; their
/// edits go to `actions`.
fn run_layer_passes(
    sites: &[model::NormSite],
    discs: &[model::DiscSite],
    weights: &Weights,
    keras_version: Option<&str>,
    policy: Policy,
    legacy: &[crate::passes::migrate::Rename],
    actions: &mut Vec<Action>,
) -> Result<(Vec<LayerReport>, Vec<DiscretizationReport>)> {
    let mut layers = Vec::new();
    let mut claimed = HashSet::new();
    let within_counts = count_within(sites);
    for site in sites {
        let (report, action) = analyze(
            site,
            weights,
            keras_version,
            policy,
            &mut claimed,
            &within_counts,
            legacy,
        )?;
        layers.push(report);
        actions.extend(action);
    }
    let mut discretizations = Vec::new();
    let disc_within =
        crate::passes::normalization::count_locators(discs.iter().map(|d| &d.locator));
    for site in discs {
        let (report, action) = crate::passes::discretization::analyze(
            site,
            weights,
            &mut claimed,
            &disc_within,
            legacy,
        )?;
        discretizations.push(report);
        actions.extend(action);
    }
    Ok((layers, discretizations))
}

/// The migrated optimizer's variables: their edit and rewrite, or the
/// finding that says why none is made.
fn plan_optimizer(
    o: &crate::passes::migrate::OptimizerVariables,
    weights: &Weights,
    path: &std::path::Path,
    findings: &mut Vec<Finding>,
    actions: &mut Vec<Action>,
    migration: &mut Vec<crate::passes::migrate::Rewrite>,
) -> Result<()> {
    // tf.keras saves a LossScaleOptimizer's inner optimizer under
    // `optimizer/inner_optimizer` (and its variables, which are the inner
    // ones, under `optimizer/vars` too); the compile config names only the
    // inner optimizer.
    if weights.is_group("optimizer/inner_optimizer") {
        findings.push(finding(
            Code::LossScalingDropped,
            format!("tf.keras trained this model with its {} optimizer wrapped in a LossScaleOptimizer (mixed precision), which the archive records only in its weights; Keras 3 compiles it with {0} alone, its state carried over, but without loss scaling: wrap it in keras.optimizers.LossScaleOptimizer before training in float16", o.class),
        ));
    }
    match optimizer_action(weights, o, path)? {
        OptimizerPlan::Edit(edit) => {
            let (action, rewrite) = *edit;
            actions.push(action);
            migration.push(rewrite);
        }
        OptimizerPlan::Same => {}
        OptimizerPlan::NotBuilt => findings.push(finding(
            Code::OptimizerNotBuilt,
            format!("the {} optimizer was compiled but never took a step, so tf.keras saved no slots: Keras 3 warns that it skips the optimizer's variables and starts it afresh, as tf.keras would", o.class),
        )),
        OptimizerPlan::Dropped(edit) => {
            let (action, rewrite) = *edit;
            findings.push(finding(
                Code::OptimizerStateDropped,
                format!("krepair does not map the {} optimizer's variables into Keras 3's layout: its {} saved variables are removed, and the migrated optimizer starts afresh from step 0 with the same hyperparameters", o.class, rewrite.old["variables"]),
            ));
            actions.push(action);
            migration.push(rewrite);
        }
        OptimizerPlan::NotSaved => findings.push(finding(
            Code::OptimizerStateNotSaved,
            format!("the {} optimizer was a tf.keras legacy optimizer, whose variables (iterations, slots) tf.keras does not save in a .keras archive, and whose legacy HDF5 layout krepair does not map: the migrated model's optimizer starts afresh from step 0 (Keras 3 warns that it skips the optimizer's variables)", o.class),
        )),
    }
    Ok(())
}

/// A compressed `model.weights.h5`, inflated (its CRC-32 checked) into a
/// temporary file to be mapped; the file is removed when this is dropped
/// (a mapping of it stays valid).
pub(crate) struct Inflated {
    /// The temporary file.
    pub file: tempfile::NamedTempFile,
    /// Its length.
    pub len: u64,
    _guard: crate::os::cleanup::Registered,
}

impl Inflated {
    /// Inflate the weights member of `archive`.
    pub fn weights(archive: &mut Archive) -> Result<Inflated> {
        let file = tempfile::Builder::new()
            .prefix(&crate::os::cleanup::prefix())
            .suffix(".h5")
            .tempfile()
            .map_err(|e| Error::io(std::env::temp_dir(), "create a temporary file", e))?;
        let guard = crate::os::cleanup::register(file.path());
        let mut w = BufWriter::with_capacity(1 << 20, file.as_file());
        archive.copy_member(archive::WEIGHTS, &mut w, u64::MAX)?;
        std::io::Write::flush(&mut w).map_err(|e| Error::io(file.path(), "write", e))?;
        drop(w);
        let len = file
            .as_file()
            .metadata()
            .map_err(|e| Error::io(file.path(), "stat", e))?
            .len();
        Ok(Inflated {
            file,
            len,
            _guard: guard,
        })
    }
}

/// The Normalization and Discretization layers of a parsed config.json,
/// and its findings about code (added to `findings`).
fn layers_of<J: crate::view::json_tree::Json>(
    config: &J,
    findings: &mut Vec<Finding>,
) -> std::result::Result<(Vec<model::NormSite>, Vec<model::DiscSite>), String> {
    let found = model::find_layers(config)?;
    for (code, message) in model::code_findings(config) {
        findings.push(finding(code, message));
    }
    Ok(found)
}

/// Drop `v` on a thread of its own (or here, if none can be started).
fn drop_aside<T: Send + 'static>(v: T) {
    // A failed spawn drops the closure, and `v` with it, here.
    let _ = std::thread::Builder::new()
        .name("krepair-drop".into())
        .spawn(move || drop(v));
}

/// A migration refusal as the error of `path` (refusing to `verb`), its
/// reason after `what` if given.
fn refused(
    path: &std::path::Path,
    r: crate::passes::migrate::Refusal,
    verb: Verb,
    what: Option<&str>,
) -> Error {
    Error::Refused {
        path: path.to_path_buf(),
        verb,
        layer: if r.layer.is_empty() {
            "(the model)".into()
        } else {
            r.layer
        },
        reason: match what {
            Some(what) => format!("{what}: {}", r.reason),
            None => r.reason,
        },
    }
}

/// The group tf.keras and Keras 3 save an optimizer's variables in.
const OPTIMIZER_VARS: &str = "optimizer/vars";

/// What an optimizer's saved variables need.
enum OptimizerPlan {
    /// This edit (boxed: it is much larger than the other variants).
    Edit(Box<(Action, crate::passes::migrate::Rewrite)>),
    /// Nothing: Keras 3 lays them out as tf.keras did (a schedule).
    Same,
    /// Nothing can: tf.keras saved no slots (it never took a step).
    NotBuilt,
    /// Nothing can: tf.keras saves no variables of a legacy optimizer.
    NotSaved,
    /// This edit removes variables krepair does not map.
    Dropped(Box<(Action, crate::passes::migrate::Rewrite)>),
}

/// How many datasets `optimizer/vars` holds (`datasets`), once they are checked to be
/// named 0, 1, ..., with the iterations (an integer scalar) first; else
/// why not.
fn optimizer_datasets(
    datasets: &[crate::weights::DatasetInfo],
) -> std::result::Result<usize, String> {
    let count = datasets.len();
    // Link names are unique, so `count` names each in 0..count are
    // exactly 0, 1, ..., count - 1.
    for d in datasets {
        match d.name.parse::<usize>() {
            Ok(i) if i < count && d.name == i.to_string() => {}
            _ => {
                return Err(format!(
                    "`{OPTIMIZER_VARS}` holds `{}`: not one of 0..{count}",
                    d.name
                ))
            }
        }
    }
    let iterations = datasets.iter().find(|d| d.name == "0");
    if !iterations.is_some_and(|d| matches!(d.elem, Elem::Int(_)) && d.shape.is_empty() && !d.null)
    {
        return Err(format!(
            "`{OPTIMIZER_VARS}/0` is not the integer scalar of the optimizer's iterations"
        ));
    }
    Ok(count)
}

/// Check the saved tf.keras optimizer variables against what the config
/// says they are, and plan their Keras 3 layout.
fn optimizer_action(
    weights: &Weights,
    o: &crate::passes::migrate::OptimizerVariables,
    path: &std::path::Path,
) -> Result<OptimizerPlan> {
    let refuse = |reason: String| {
        let layer = "(the optimizer)".into();
        refused(
            path,
            crate::passes::migrate::Refusal { layer, reason },
            Verb::Migrate,
            None,
        )
    };
    if o.legacy {
        if weights.is_group("optimizer") {
            return Err(refuse(format!(
                "the legacy {} optimizer has an `optimizer` group in the weights, which tf.keras never writes for one",
                o.class
            )));
        }
        return Ok(OptimizerPlan::NotSaved);
    }
    if !weights.is_group(OPTIMIZER_VARS) {
        return Ok(OptimizerPlan::NotBuilt);
    }
    if o.drop_state {
        let count = weights.datasets(OPTIMIZER_VARS)?.len();
        if count == 0 {
            return Ok(OptimizerPlan::NotBuilt);
        }
        let rewrite = crate::passes::migrate::Rewrite {
            code: Rule::UnmappedOptimizer,
            layer: String::new(),
            key: format!("{}:{OPTIMIZER_VARS}", archive::WEIGHTS),
            old: serde_json::json!({"variables": count}),
            new: Some(serde_json::json!({"variables": 0})),
        };
        let action = Action::DropOptimizerState {
            group: OPTIMIZER_VARS.into(),
            count,
        };
        return Ok(OptimizerPlan::Dropped(Box::new((action, rewrite))));
    }
    let count = optimizer_datasets(&weights.datasets(OPTIMIZER_VARS)?).map_err(refuse)?;
    if count == 1 {
        return Ok(OptimizerPlan::NotBuilt);
    }
    let slots = count - 1;
    if slots % o.slots_per_variable != 0 {
        return Err(refuse(format!(
            "the {} optimizer keeps {} slot(s) per variable, but `{OPTIMIZER_VARS}` holds {slots} after the iterations",
            o.class, o.slots_per_variable
        )));
    }
    let lr = usize::from(o.learning_rate.is_some());
    if lr == 0 && !o.drop_slots {
        return Ok(OptimizerPlan::Same);
    }
    let after = if o.drop_slots { 1 + lr } else { count + lr };
    let rewrite = crate::passes::migrate::Rewrite {
        code: Rule::OptimizerVariables,
        layer: String::new(),
        key: format!("{}:{OPTIMIZER_VARS}", archive::WEIGHTS),
        old: serde_json::json!({"variables": count}),
        new: Some(serde_json::json!({
            "variables": after,
            "learning_rate": o.learning_rate,
            "slots_dropped": if o.drop_slots { slots } else { 0 },
        })),
    };
    Ok(OptimizerPlan::Edit(Box::new((
        Action::OptimizerVariables {
            group: OPTIMIZER_VARS.into(),
            count,
            learning_rate: o.learning_rate,
            drop_slots: o.drop_slots,
        },
        rewrite,
    ))))
}
