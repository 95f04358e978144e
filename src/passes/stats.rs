//! The statistics math: validation, std, identity, and exact JSON text.
//!
//! Pure: no I/O. Values are float32 as Keras stores them; JSON text widens
//! each float32 to f64 and writes the shortest f64 text, which Python reads
//! back to the same float32 for every finite value (see docs/verify.md).

use serde::Serialize;

/// Most values one statistic may hold for krepair to embed it: the
/// embedded text takes about 25 bytes a value in config.json, whose size
/// krepair caps at 64 MiB (`archive::MAX_CONFIG_BYTES`). Per-pixel
/// statistics of a 512x512 RGB image are 786,432 values.
pub const MAX_VALUES: usize = 1 << 20;

/// A float32 tensor in row-major order.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Tensor {
    /// The shape; empty for a scalar.
    pub shape: Vec<usize>,
    /// The values, `shape.iter().product()` of them.
    pub data: Vec<f32>,
}

impl Tensor {
    /// A tensor of `shape` filled with `value`.
    pub fn filled(shape: &[usize], value: f32) -> Self {
        Tensor {
            shape: shape.to_vec(),
            data: vec![value; shape.iter().product()],
        }
    }

    /// Bitwise equality (distinguishes -0.0 from 0.0 and compares NaN bits).
    pub fn bits_eq(&self, other: &Tensor) -> bool {
        self.shape == other.shape
            && self.data.len() == other.data.len()
            && self
                .data
                .iter()
                .zip(&other.data)
                .all(|(a, b)| a.to_bits() == b.to_bits())
    }

    /// The tensor as nested JSON arrays of exact numbers (a bare number for
    /// a scalar), formatted as Python's `json.dumps` lays out lists.
    pub fn to_json_text(&self) -> String {
        let mut out = String::new();
        write_nested(&mut out, &self.shape, &self.data);
        out
    }

    /// The tensor as a `serde_json::Value` of nested arrays of exact numbers.
    pub fn to_json_value(&self) -> serde_json::Value {
        nested_value(&self.shape, &self.data)
    }

    /// A view that serializes as [`Tensor::to_json_value`] does, without
    /// building a JSON value per element.
    pub fn nested(&self) -> Nested<'_> {
        Nested {
            shape: &self.shape,
            data: &self.data,
        }
    }
}

/// Nested arrays of exact numbers, serialized straight from the values.
#[derive(Clone, Copy, Debug)]
pub struct Nested<'a> {
    shape: &'a [usize],
    data: &'a [f32],
}

impl Serialize for Nested<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        match self.shape.split_first() {
            None => match self.data.first() {
                Some(x) => s.serialize_f64(*x as f64),
                None => s.serialize_none(),
            },
            Some((&n, rest)) => {
                let stride: usize = rest.iter().product();
                let mut seq = s.serialize_seq(Some(n))?;
                for i in 0..n {
                    let part = self.data.get(i * stride..(i + 1) * stride).unwrap_or(&[]);
                    seq.serialize_element(&Nested {
                        shape: rest,
                        data: part,
                    })?;
                }
                seq.end()
            }
        }
    }
}

fn number_text(x: f32) -> String {
    // Widening is exact; serde_json writes the shortest text that reads back
    // as the same f64, hence as the same f32.
    serde_json::to_string(&(x as f64)).expect("finite numbers serialize")
}

fn write_nested(out: &mut String, shape: &[usize], data: &[f32]) {
    match shape.split_first() {
        None => out.push_str(&number_text(data[0])),
        Some((&n, rest)) => {
            let stride: usize = rest.iter().product();
            out.push('[');
            for i in 0..n {
                if i > 0 {
                    out.push_str(", ");
                }
                write_nested(out, rest, &data[i * stride..(i + 1) * stride]);
            }
            out.push(']');
        }
    }
}

fn nested_value(shape: &[usize], data: &[f32]) -> serde_json::Value {
    match shape.split_first() {
        None => serde_json::Value::from(data[0] as f64),
        Some((&n, rest)) => {
            let stride: usize = rest.iter().product();
            serde_json::Value::Array(
                (0..n)
                    .map(|i| nested_value(rest, &data[i * stride..(i + 1) * stride]))
                    .collect(),
            )
        }
    }
}

/// `#[serde(with = "stats::nested_json")]` for a [`Tensor`] field: written
/// as nested arrays of exact numbers (`null` for NaN and infinities, as
/// serde_json writes them), read back into shape and values without a
/// JSON value per element.
pub mod nested_json {
    use super::Tensor;
    use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
    use serde::{Deserializer, Serialize, Serializer};

    /// Serialize `t` as nested arrays.
    pub fn serialize<S: Serializer>(t: &Tensor, s: S) -> Result<S::Ok, S::Error> {
        t.nested().serialize(s)
    }

    /// Read nested arrays of numbers back into a tensor.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Tensor, D::Error> {
        let mut data = Vec::new();
        let shape = Level { data: &mut data }.deserialize(d)?;
        Ok(Tensor { shape, data })
    }

    /// One nesting level: pushes its numbers, returns its shape.
    struct Level<'a> {
        data: &'a mut Vec<f32>,
    }

    impl<'de> DeserializeSeed<'de> for Level<'_> {
        type Value = Vec<usize>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<usize>, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Level<'_> {
        type Value = Vec<usize>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a number or nested arrays of numbers")
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Vec<usize>, E> {
            self.data.push(v as f32);
            Ok(Vec::new())
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Vec<usize>, E> {
            self.visit_f64(v as f64)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Vec<usize>, E> {
            self.visit_f64(v as f64)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Vec<usize>, E> {
            self.visit_f64(f64::NAN)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<usize>, A::Error> {
            let mut n = 0usize;
            let mut inner: Option<Vec<usize>> = None;
            while let Some(shape) = seq.next_element_seed(Level {
                data: &mut *self.data,
            })? {
                if inner.as_ref().is_some_and(|s| *s != shape) {
                    return Err(de::Error::custom("ragged nested arrays"));
                }
                inner = Some(shape);
                n += 1;
            }
            let mut shape = vec![n];
            shape.extend(inner.unwrap_or_default());
            Ok(shape)
        }
    }
}

/// Why a set of statistics cannot be used.
#[derive(Clone, Debug, PartialEq)]
pub enum StatsProblem {
    /// A mean or variance value is NaN or infinite.
    NonFinite {
        /// "mean" or "variance".
        which: &'static str,
        /// Flat index of the first bad value.
        index: usize,
    },
    /// A variance value is negative.
    NegativeVariance {
        /// Flat index of the first bad value.
        index: usize,
    },
}

impl StatsProblem {
    /// The stable finding code.
    pub fn code(&self) -> crate::codes::Code {
        match self {
            StatsProblem::NonFinite { .. } => crate::codes::Code::NonFiniteStatistics,
            StatsProblem::NegativeVariance { .. } => crate::codes::Code::NegativeVariance,
        }
    }
}

impl std::fmt::Display for StatsProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StatsProblem::NonFinite { which, index } => {
                write!(f, "stored {which} is not finite at index {index}")
            }
            StatsProblem::NegativeVariance { index } => {
                write!(f, "stored variance is negative at index {index}")
            }
        }
    }
}

/// Check that a mean/variance pair can be embedded: finite values and a
/// variance that is not negative.
pub fn check(mean: &Tensor, variance: &Tensor) -> Result<(), StatsProblem> {
    for (which, t) in [("mean", mean), ("variance", variance)] {
        if let Some(index) = t.data.iter().position(|v| !v.is_finite()) {
            return Err(StatsProblem::NonFinite { which, index });
        }
    }
    if let Some(index) = variance.data.iter().position(|v| *v < 0.0) {
        return Err(StatsProblem::NegativeVariance { index });
    }
    Ok(())
}

/// The standard deviation Keras divides by: `sqrt(variance)` in float32.
/// (Keras also clamps it from below by epsilon = 1e-7 at call time.)
pub fn std(variance: &Tensor) -> Tensor {
    Tensor {
        shape: variance.shape.clone(),
        data: variance.data.iter().map(|v| v.sqrt()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_text_is_nested_and_exact() {
        let t = Tensor {
            shape: vec![2, 2],
            data: vec![0.1, 1.0, -2.5, 7.038531e-26],
        };
        let text = t.to_json_text();
        assert_eq!(
            text,
            "[[0.10000000149011612, 1.0], [-2.5, 7.038530691851209e-26]]"
        );
        // Every number reads back as the same float32.
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let flat: Vec<f32> = v
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
            })
            .collect();
        assert_eq!(flat, t.data);
        assert_eq!(t.to_json_value(), v);
    }

    #[test]
    fn scalar_is_a_bare_number() {
        let t = Tensor {
            shape: vec![],
            data: vec![3.5],
        };
        assert_eq!(t.to_json_text(), "3.5");
        assert_eq!(Tensor::filled(&[], 0.0).to_json_text(), "0.0");
    }

    #[test]
    fn check_rejects_bad_values() {
        let ok = Tensor::filled(&[3], 1.0);
        assert_eq!(check(&ok, &ok), Ok(()));
        let mut nan = ok.clone();
        nan.data[1] = f32::NAN;
        assert_eq!(
            check(&nan, &ok),
            Err(StatsProblem::NonFinite {
                which: "mean",
                index: 1
            })
        );
        let mut inf = ok.clone();
        inf.data[2] = f32::INFINITY;
        assert_eq!(
            check(&ok, &inf).unwrap_err().code(),
            crate::codes::Code::NonFiniteStatistics
        );
        let mut neg = ok.clone();
        neg.data[0] = -1e-3;
        assert_eq!(
            check(&ok, &neg),
            Err(StatsProblem::NegativeVariance { index: 0 })
        );
    }

    #[test]
    fn std_is_sqrt() {
        let v = Tensor {
            shape: vec![2],
            data: vec![4.0, 0.0],
        };
        assert_eq!(std(&v).data, vec![2.0, 0.0]);
    }

    #[test]
    fn bits_eq_tells_signed_zero_apart() {
        let a = Tensor::filled(&[1], 0.0);
        let b = Tensor::filled(&[1], -0.0);
        assert!(!a.bits_eq(&b));
        assert!(a.bits_eq(&a.clone()));
    }
}
