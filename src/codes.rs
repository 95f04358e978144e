//! The stable codes of krepair's findings and rewrites, as types (a leaf:
//! every stage names its findings with these).
//!
//! Each code is an enum variant whose serde name is its kebab-case code,
//! with its description beside it: a typo is a compile error, and the
//! report reads back without an interner. docs/report.md and
//! docs/migration.md list the same tables; tests keep them in step.

use serde::{Deserialize, Serialize};

/// How serious a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    /// For the record.
    Info,
    /// Worth a human's look; the repair still proceeds.
    Warning,
    /// The layer cannot be repaired safely.
    Error,
}

/// Define a code enum: each variant with its kebab-case name, (for
/// findings) its severity, and its one-line description.
macro_rules! code_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $( $variant:ident = $text:literal $(, $sev:ident)? => $desc:literal ),* $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $(
                #[doc = $desc]
                #[serde(rename = $text)]
                $variant,
            )*
        }

        impl $name {
            /// Every code, in the order of the table.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            /// Its stable kebab-case name.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }

            /// What it means (one line).
            pub const fn description(self) -> &'static str {
                match self {
                    $($name::$variant => $desc,)*
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        code_enum!(@severity $name { $( $variant $(=> $sev)? ),* });
    };
    (@severity $name:ident { $( $variant:ident => $sev:ident ),* }) => {
        impl $name {
            /// How serious a finding with this code is.
            pub const fn severity(self) -> Severity {
                match self {
                    $($name::$variant => Severity::$sev,)*
                }
            }
        }
    };
    (@severity $name:ident { $( $variant:ident ),* }) => {};
}

code_enum! {
    /// What a finding is about: a fact about the archive or a layer.
    pub enum Code {
        AdaptMode = "adapt-mode", Info => "the layer's statistics (a Normalization's mean and variance, a Discretization's summary) live in variables that only finalize_state() applies",
        AlreadyExplicit = "already-explicit", Info => "the layer's config holds its statistics (mean and variance, or bin boundaries); nothing to repair",
        BoundariesComputed = "boundaries-computed", Info => "a Discretization's bin boundaries computed from its stored summary exactly as tf.keras's finalize_state() does (float64 interpolation, float32 result)",
        NeverAdapted = "never-adapted", Warning => "a Discretization whose summary is empty (built, never adapted): it puts every input in bin 0, and so do the empty bin_boundaries embedded for it",
        BadNumBins = "bad-num-bins", Error => "a Discretization in adapt mode whose num_bins is not a whole number from 1 to passes::discretization::MAX_BINS",
        BadSummary = "bad-summary", Error => "a Discretization's summary has unsorted values, a negative weight, or weights that are all zero",
        KeptInVariables = "kept-in-variables", Info => "kept axes are not the trailing ones: no explicit config loads in every Keras 3 version, so the chosen statistics are written into the layer's variables",
        LegacyWeightsSignature = "legacy-weights-signature", Warning => "saved by Keras 3.0-3.5 inside a keras.applications EfficientNet built with weights=\"imagenet\": the model computed identity normalization",
        AmbiguousLegacyLoad = "ambiguous-legacy-load", Warning => "saved by Keras 3.0-3.5 in adapt mode: if its weights came from a legacy .h5 file the model computed identity, and the archive cannot tell",
        PolicyOverride = "policy-override", Info => "the statistics were chosen by --stats, not inferred",
        UnknownKerasVersion = "unknown-keras-version", Warning => "metadata.json is missing or names no keras_version",
        CodeInConfig = "code-in-config", Warning => "a layer config carries code (Lambda, TorchModuleWrapper, TFSMLayer) that Keras would run on load; krepair never evaluates it",
        CustomClass = "custom-class", Info => "a layer or object comes from a module outside Keras; loading the model needs that code",
        NoVariables = "no-variables", Warning => "adapt-mode layer that was never built (no build_config, no variables); left alone",
        InputShapeDerived = "input-shape-derived", Info => "the config declares no build_config (tf.keras 2.12): the layer's input shape is taken from its batch_input_shape or the InputLayer feeding it (directly or through layers that keep their input's shape) and completed from the stored statistics' shape",
        InconsistentConfig = "inconsistent-config", Error => "only one of mean and variance is set in the config",
        ShapeUnknown = "shape-unknown", Error => "the config does not say the layer's input shape, or it contradicts the axis",
        WeightsNotFound = "weights-not-found", Error => "no weights group for the layer where Keras would store it",
        WeightsAmbiguous = "weights-ambiguous", Error => "more than one weights group could be the layer's",
        WeightsMismatch = "weights-mismatch", Error => "the weights group does not hold the expected datasets (a Normalization's mean, variance and count; a Discretization's float32 summary of shape [2, n]) of the expected dtypes and shapes",
        OptimizerNotBuilt = "optimizer-not-built", Info => "a compiled tf.keras model whose optimizer never took a step: no slots were saved, and Keras 3 starts the optimizer afresh (with a warning), as tf.keras would",
        OptimizerStateNotSaved = "optimizer-state-not-saved", Warning => "a compiled tf.keras model with a legacy optimizer (keras.optimizers.legacy), whose variables tf.keras never saves in a .keras archive: the migrated optimizer starts afresh",
        OptimizerStateDropped = "optimizer-state-dropped", Warning => "a compiled tf.keras model whose optimizer's variables krepair does not map into Keras 3's layout (migrate::UNMAPPED_OPTIMIZERS): they are removed, and the migrated optimizer starts afresh with the same class and hyperparameters",
        LossScalingDropped = "loss-scaling-dropped", Warning => "tf.keras wrapped the optimizer in a LossScaleOptimizer (mixed precision), recorded only in the weights; the migrated model is compiled with the inner optimizer and its state, without loss scaling",
        StatsTooLarge = "stats-too-large", Error => "the layer's statistics (or a Discretization's summary) have more values than krepair reads (stats::MAX_VALUES)",
        NonFiniteStatistics = "non-finite-statistics", Error => "a stored mean, variance or Discretization summary holds a NaN or an infinity",
        NegativeVariance = "negative-variance", Error => "a stored variance is negative",
        LoadIn = "load-in", Info => "the Keras 3 versions the output was made for (--load-in; every pinned Keras 3 and the pinned pre-release by default), each checked against what that version's constructors take and names resolve (src/passes/keras3/compat.json)",
        NotLoadableIn = "not-loadable-in", Warning => "a Keras 3 version asked for (--load-in) cannot load the output, or would predict otherwise, and no form of the config serves it and the others: which version, and why",
    }
}

code_enum! {
    /// Which migration rule rewrote the config (docs/migration.md has the
    /// Keras source lines behind each).
    pub enum Rule {
        LegacyModule = "legacy-module" => "tf.keras 2.12 writes the layers inside a model, and the initializers, regularizers, constraints and dtype policies inside a layer, in the legacy form without a module (serialize_keras_object of keras/saving/legacy); Keras 3 reads that form through its legacy loader only for whole layers and loses the rules below, so each gets the module tf.keras 2.13 writes",
        NumpyScalar = "numpy-scalar" => "tf.keras 2.12 writes some NumPy scalars in a layer config as {\"class_name\": \"__numpy__\", ...} (a ReLU's max_value, negative_slope and threshold); Keras 3 hands that dict to the layer's constructor as it is (\"could not be deserialized properly\"), and tf.keras 2.12 itself cannot load it; tf.keras 2.13 writes the plain number",
        ModelModule = "model-module" => "tf.keras writes the module of a model class as keras.src.engine.* (keras.engine.* in 2.12), which no Keras 3 can import; Keras 3 keeps Functional in keras.src.models.functional and Sequential in keras.src.models.sequential",
        BatchInputShape = "batch-input-shape" => "tf.keras writes batch_input_shape into the config of a layer that was given an input shape; Keras 3's Layer.__init__ accepts only input_shape and input_dim and raises on any other keyword (InputLayer keeps it: it reads batch_input_shape itself)",
        DtypePolicy = "dtype-policy" => "tf.keras serializes a mixed-precision policy as keras.mixed_precision Policy; Keras 3 reads that as a plain string dtype and fails (3.15) or loses the policy; it is a keras DTypePolicy",
        OneElementAxis = "one-element-axis" => "tf.keras BatchNormalization normalizes its axis to a list at build time and writes it so ([3]); Keras 3's BatchNormalization takes one int (self.axis = int(axis)) and fails on the list",
        DepthwiseGroups = "depthwise-groups" => "tf.keras DepthwiseConv2D inherits groups from its convolution base and writes groups: 1; Keras 3's DepthwiseConv2D has no groups argument, so Layer.__init__ rejects it",
        NestedNodeIndex = "nested-node-index" => "tf.keras gives a nested Functional, or a Sequential built on its own InputLayer, a node 0 of its own, so its first call inside a Functional is node 1; in Keras 3 it is node 0, and the old index makes Keras 3.15 reject the graph (3.0.5 and 3.13 loop forever)",
        WeightsLayout = "weights-layout" => "tf.keras 2.13 and 2.14 keep a model's layers under _layer_checkpoint_dependencies in model.weights.h5, and 2.13 numbers layers of one class by twos when they have weights (keras #18830); tf.keras 2.15 and Keras 3 use layers and number by ones. Keras >= 3.0.2 falls back to the old container name, but not to the old numbers: \"expected 2 variables, but received 0\"",
        DiscretizationTrainable = "discretization-trainable" => "tf.keras writes trainable into every layer config; Keras 3's Discretization.__init__ takes no trainable and no **kwargs (\"unexpected keyword argument 'trainable'\", 3.0 to 3.15), and the layer has no trainable weights in either, so the key is removed",
        DiscretizationEncoding = "discretization-encoding" => "Keras 3.0 to 3.13 give a Discretization the symbolic output shape of its input whatever its output_mode (compute_output_spec; fixed in 3.14, keras #22048), so a one-hot, multi-hot or count Discretization feeding a Dense builds the Dense for the wrong width and the archive does not load. The layer becomes an int-mode Discretization (same name, dtype int64 as tf.keras's int mode) followed by a CategoryEncoding(num_tokens = bins, the same output_mode and dtype) that takes over every reference to it: the same values in every Keras 3, and layers without weights; refused where the deeper graph could make Keras 3 renumber a layer with weights above it",
        CategoryEncodingSparse = "category-encoding-sparse" => "tf.keras writes a CategoryEncoding's sparse; Keras 3.0's CategoryEncoding has no sparse argument and Layer.__init__ rejects it (3.15 takes it, default false), so a sparse of false is removed (true is refused: no Keras 3.0 layer computes it)",
        RnnTimeMajor = "rnn-time-major" => "tf.keras RNN layers write time_major; Keras 3's RNN layers are batch-major only and have no such argument, so Layer.__init__ rejects it (a time_major of true is refused)",
        GruImplementation = "gru-implementation" => "tf.keras writes a GRU's implementation; Keras 3.0.5's GRU passes no implementation to its cell and Layer.__init__ rejects it (3.15 pops it); both implementations compute the same function",
        EmbeddingInputLength = "embedding-input-length" => "tf.keras writes an Embedding's input_length; Keras 3.0.5's Embedding has no such argument and Layer.__init__ rejects it (3.15 pops it with a deprecation warning); the InputLayer carries the shape",
        OrthogonalInitializer = "orthogonal-initializer" => "tf.keras names the orthogonal initializer Orthogonal; Keras 3.0.5 cannot resolve that class (its class is OrthogonalInitializer: \"Could not interpret initializer identifier\"), and keras-nightly 3.16 no longer resolves OrthogonalInitializer (\"not a KerasSaveable subclass\"); the name \"orthogonal\" resolves in every Keras 3, so an Orthogonal with tf.keras's defaults (gain 1.0, no seed) becomes that name (one with other arguments stays Orthogonal, which 3.5 and later load)",
        TfOpArithmetic = "tf-op-arithmetic" => "tf.keras saves arithmetic on Keras tensors (x * 2, x + y, -x) as a TFOpLambda layer that calls a TensorFlow function by name; Keras 3 has no TFOpLambda. Where a Keras 3 layer computes the same float32 values to the bit (Rescaling for a constant, Add, Subtract, Multiply for two tensors, Concatenate for tf.concat) the entry becomes that layer, under the same name and with the same inputs",
        OptimizerModule = "optimizer-module" => "tf.keras 2.15 serializes SGD from keras.optimizers.experimental, a module Keras 3 does not have; Keras 3 keeps every optimizer in keras.optimizers",
        LegacyOptimizer = "legacy-optimizer" => "a tf.keras legacy optimizer (keras.optimizers.legacy: what `import keras` gives in tf.keras 2.12) is not in Keras 3, and tf.keras saves none of its variables in a .keras archive; it becomes the Keras 3 optimizer of the same class and hyperparameters, its decay of 0 (the only value with an exact Keras 3 equivalent) removed, starting afresh",
        UnmappedOptimizer = "unmapped-optimizer" => "the saved variables of a tf.keras optimizer whose layout krepair does not map (Adadelta, Adafactor, Adagrad, Adamax, AdamW, Ftrl, Lion, Nadam) are removed from model.weights.h5, with the finding optimizer-state-dropped: Keras 3 then starts the optimizer afresh with its class and hyperparameters (every key tf.keras writes is an argument of the Keras 3 class), instead of loading slots whose order and meaning are not verified (under a schedule the counts agree and Keras 3 would load them as they are)",
        OptimizerArguments = "optimizer-arguments" => "tf.keras optimizers write jit_compile and is_legacy_optimizer into their config; Keras 3's BaseOptimizer.__init__ raises on any keyword it does not know (\"Argument(s) not recognized\")",
        OptimizerVariables = "optimizer-variables" => "tf.keras saves an optimizer as iterations then its slots; Keras 3 tracks a learning-rate variable second (BaseOptimizer.__init__), and its SGD keeps no momentum slots without momentum. Without the new layout Keras 3 skips the whole optimizer state with a warning",
        ScheduleName = "schedule-name" => "tf.keras learning-rate schedules default their name to null and fall back to the class name when called; Keras 3 opens a name scope with the name as given and fails on null (\"Argument `name` must be a string\") at the first training step",
        LossArguments = "loss-arguments" => "tf.keras loss classes write the wrapped function as fn; Keras 3 loss classes take no fn argument",
        LossReduction = "loss-reduction" => "tf.keras writes reduction \"auto\", which Keras 3 refuses (standardize_reduction); tf.keras's auto is sum_over_batch_size outside distribution strategies, Keras 3's default",
        CompileDefaults = "compile-defaults" => "tf.keras records compile arguments left unset as null; Keras 3 fails to fit with steps_per_execution null (self.steps_per_execution > 1) and treats null run_eagerly and jit_compile unlike its defaults (False, \"auto\")",
        ConvGroups = "conv-groups" => "tf.keras transposed and separable convolutions inherit groups from the convolution base and write groups: 1; Keras 3's have no groups argument and Layer.__init__ rejects it (any other value is refused: Keras 3 has no grouped transposed or separable convolution)",
        UnusedArgument = "unused-argument" => "a key tf.keras writes that its layer never reads, or reads only in training, and that Keras 3 does not take (docs/layers.md lists each: a separable convolution's kernel_* arguments, a SpatialDropout's noise_shape and trainable, MultiHeadAttention's build shapes and softmax_robust_masking false, the augmentation layers' rng_type)",
        RenamedArgument = "renamed-argument" => "a key Keras 3 takes under another name (LeakyReLU's alpha is Keras 3's negative_slope, alpha reaching it only through a deprecation warning)",
        AugmentationIdentity = "augmentation-identity" => "RandomHeight and RandomWidth, which Keras 3 does not have, return their input unchanged at inference (training=False); they become Identity layers of the same name, so the model predicts the same but no longer resizes its inputs at random while training",
        ThresholdedRelu = "thresholded-relu" => "ThresholdedReLU, which Keras 3 does not have, computes x * (x > theta); Keras 3's ReLU with threshold theta, negative_slope 0 and no max_value computes x where x > threshold, else 0 (keras.activations.relu): the same value for every finite input (3.15 and later give +0.0 where tf.keras gave -0.0 for a negative input, and 0 where it gave NaN for -inf; 3.0 to 3.13 multiply as tf.keras does)",
        AttentionBuildShapes = "attention-build-shapes" => "tf.keras writes a MultiHeadAttention's query_shape, key_shape and value_shape into its config and builds it from them; Keras 3's constructor does not take them, and its build needs all three (build(query_shape, value_shape, key_shape)) where tf.keras's build_config gives only the query's: they move into build_config as the shapes_dict Keras 3 writes itself",
        KeywordTensors = "keyword-tensors" => "tf.keras writes a tensor passed to a layer call by keyword (a MultiHeadAttention's value=) as a [layer, node, tensor] list in the kwargs of its legacy node, which only tf.keras's loader turns back into a tensor; Keras 3 would call the layer with the list. The node becomes Keras 3's form, {\"args\", \"kwargs\"} with each tensor a __keras_tensor__ whose keras_history Keras 3 resolves to the tensor (its shape, from the InputLayer or the layer's build_config, only makes the placeholder)",
        DotBuildConfig = "dot-build-config" => "Keras 3.0.5's Dot.build takes its two input shapes only as tuples (isinstance(input_shape[0], tuple)) and a build_config read from JSON holds lists, so the archive does not load (3.15 takes lists); a Dot has no variables, and Keras builds it when the model calls it, so its build_config is removed",
        DiscretizationDtype = "discretization-dtype" => "tf.keras writes an int-mode Discretization's dtype as int64, its output's; Keras 3.0 to 3.10 take int64 as their own int-mode default, but 3.15 and later read dtype as the layer's compute dtype (their int output is int32) and on the TensorFlow backend cast the float input to int64 before bucketing it (bins off by up to 2, seen in 3.15.1); without the key each Keras 3 uses its own default, which computes tf.keras's bins",
        OptimizerByName = "optimizer-by-name" => "a model compiled with an optimizer given by name (\"adam\") keeps the name in compile_config, and tf.keras saved the variables of the optimizer the name gave, with its default arguments; the name becomes that optimizer's config with tf.keras's defaults, so the saved variables are laid out for Keras 3 as for any other optimizer of the class",
        Hdf5Model = "hdf5-model" => "a legacy HDF5 model file (model.save(\"m.h5\"), Keras 2.0 to tf.keras 2.15, and HDF5 written under a .keras name) keeps its config in the root's model_config attribute and each layer's weights under model_weights/<layer name>/<weight name>; Keras 3 reads a .keras archive's weights by position (layers/<class in snake case>[_k]/vars/<i>, sublayers under their attribute): the config becomes config.json, and each weight is copied bit for bit to the path Keras 3 reads it from",
        TrainingConfig = "training-config" => "a legacy HDF5 model file keeps its compile arguments in the root's training_config attribute (optimizer_config, loss, metrics, loss_weights, weighted_metrics); a .keras archive keeps them as compile_config, the optimizer serialized with its module (\"Custom>Adam\" is tf.keras 2.11+'s Adam, a config with decay or lr a legacy optimizer). The saved optimizer_weights of tf.keras 2.11+'s optimizers and of Keras 3's are carried over; a legacy optimizer starts afresh",
        Keras3Hdf5 = "keras3-hdf5" => "Keras 3's own legacy HDF5 file (model.save(\"m.h5\") in Keras 3) holds a Keras 3 config whose models list their layers without module and registered_name (the legacy serializer, under use_legacy_config); each entry gets what Keras 3 writes in a .keras archive (keras.layers, or the model's module), and a class no pinned Keras 3 exports is refused",
        Keras3ClassName = "keras3-class-name" => "a serialized object (a layer, initializer, regularizer or constraint) whose class name a target Keras 3 cannot resolve (OrthogonalInitializer in 3.16, Orthogonal in 3.0) takes another name of the same class that every target resolves, or, left at its defaults, the plain string every target resolves (\"orthogonal\")",
        Keras3DefaultKey = "keras3-default-key" => "a config key a target Keras 3's constructor does not take (quantization_config, optional, input_axes in older versions) is removed when it holds what Keras writes for the argument left unset, so the target computes what the writer did",
        NodeTrainingDefault = "node-training-default" => "Keras 3.0 to 3.15 write a layer's call default of training (True for the random augmentation layers) into its node's kwargs and let the outer call decide at predict; Keras 3.16 honours the node's value and would augment at predict, so the recorded default is removed",
        Keras3BuildConfig = "keras3-build-config" => "a layer without variables whose build_config a target Keras 3 cannot build from once JSON has made its shapes lists (Dot in 3.0.5: \"A Dot layer should be called on a list of 2 inputs\") loses its build_config and is built when the model calls it, as Keras builds it anyway",
        Keras3TensorLeaf = "keras3-tensor-leaf" => "Keras 3.13 and later write a Functional model's one input or output as a bare [layer, node, tensor]; Keras 3.0.5 reads input_layers and output_layers only as lists of them (functional_from_config: get_tensor(*v) for v in tensors), so the bare triple becomes a list of one, what Keras 3.10 writes for one tensor",
    }
}

impl Rule {
    /// A rule between Keras 3 versions (issue #33), not a migration from
    /// another format or from Keras 2.
    pub const fn between_keras3(self) -> bool {
        matches!(
            self,
            Rule::Keras3ClassName
                | Rule::Keras3DefaultKey
                | Rule::NodeTrainingDefault
                | Rule::Keras3BuildConfig
                | Rule::Keras3TensorLeaf
        )
    }
}
