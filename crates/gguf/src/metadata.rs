//! Ordered metadata with typed accessors.

use std::collections::HashMap;

use crate::error::ErrorKind;
use crate::value::{Array, Value};

/// The key/value section of a GGUF file, in file order, with a name index.
#[derive(Debug, Clone, Default)]
pub struct Metadata {
    entries: Vec<(String, Value)>,
    index: HashMap<String, usize>,
}

impl PartialEq for Metadata {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

type KResult<T> = std::result::Result<T, ErrorKind>;

macro_rules! int_getter {
    ($name:ident, $t:ty) => {
        #[doc = concat!("The value of `key` as `", stringify!($t), "`: any integer type whose value fits is accepted.")]
        pub fn $name(&self, key: &str) -> KResult<$t> {
            let v = self.require(key)?;
            let i = v.as_i128().ok_or_else(|| ErrorKind::WrongType {
                key: key.to_string(),
                expected: stringify!($t),
                found: v.value_type(),
            })?;
            <$t>::try_from(i).map_err(|_| ErrorKind::OutOfRange {
                key: key.to_string(),
                value: i.to_string(),
                expected: stringify!($t),
            })
        }
    };
}

impl Metadata {
    pub fn new() -> Self {
        Self::default()
    }

    /// Empty metadata with room for `n` keys.
    pub fn with_capacity(n: usize) -> Self {
        Metadata {
            entries: Vec::with_capacity(n),
            index: HashMap::with_capacity(n),
        }
    }

    /// Appends a key; an existing key is an error (files may not repeat keys).
    pub fn insert(&mut self, key: impl Into<String>, value: Value) -> KResult<()> {
        let key = key.into();
        if self.index.contains_key(&key) {
            return Err(ErrorKind::DuplicateKey(key));
        }
        self.index.insert(key.clone(), self.entries.len());
        self.entries.push((key, value));
        Ok(())
    }

    /// Sets a key, replacing its value in place if present.
    pub fn set(&mut self, key: impl Into<String>, value: Value) {
        let key = key.into();
        match self.index.get(&key) {
            Some(&i) => self.entries[i].1 = value,
            None => {
                self.index.insert(key.clone(), self.entries.len());
                self.entries.push((key, value));
            }
        }
    }

    /// Removes a key, keeping the order of the others.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let i = self.index.remove(key)?;
        let (_, v) = self.entries.remove(i);
        for idx in self.index.values_mut() {
            if *idx > i {
                *idx -= 1;
            }
        }
        Some(v)
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    fn require(&self, key: &str) -> KResult<&Value> {
        self.get(key)
            .ok_or_else(|| ErrorKind::MissingKey(key.to_string()))
    }

    int_getter!(get_u8, u8);
    int_getter!(get_u16, u16);
    int_getter!(get_u32, u32);
    int_getter!(get_u64, u64);
    int_getter!(get_i32, i32);
    int_getter!(get_i64, i64);

    /// The value of `key` as `f32` (an `f64` value is narrowed).
    pub fn get_f32(&self, key: &str) -> KResult<f32> {
        let v = self.require(key)?;
        v.as_f64().map(|f| f as f32).ok_or(ErrorKind::WrongType {
            key: key.to_string(),
            expected: "f32",
            found: v.value_type(),
        })
    }

    pub fn get_bool(&self, key: &str) -> KResult<bool> {
        match self.require(key)? {
            Value::Bool(b) => Ok(*b),
            v => Err(wrong(key, "bool", v)),
        }
    }

    pub fn get_str(&self, key: &str) -> KResult<&str> {
        match self.require(key)? {
            Value::String(s) => Ok(s),
            v => Err(wrong(key, "string", v)),
        }
    }

    pub fn get_array(&self, key: &str) -> KResult<&Array> {
        match self.require(key)? {
            Value::Array(a) => Ok(a),
            v => Err(wrong(key, "array", v)),
        }
    }

    pub fn get_string_array(&self, key: &str) -> KResult<&[String]> {
        match self.get_array(key)? {
            Array::String(s) => Ok(s),
            a => Err(wrong_array(key, "array of string", a)),
        }
    }

    pub fn get_f32_array(&self, key: &str) -> KResult<&[f32]> {
        match self.get_array(key)? {
            Array::F32(s) => Ok(s),
            a => Err(wrong_array(key, "array of f32", a)),
        }
    }

    /// An integer array as `i32` (accepts i32, u32 and narrower integer items).
    pub fn get_i32_array(&self, key: &str) -> KResult<Vec<i32>> {
        let bad = |a: &Array| wrong_array(key, "array of i32", a);
        let a = self.get_array(key)?;
        Ok(match a {
            Array::I32(v) => v.clone(),
            Array::U32(v) => v
                .iter()
                .map(|&x| i32::try_from(x).map_err(|_| bad(a)))
                .collect::<KResult<_>>()?,
            Array::U8(v) => v.iter().map(|&x| x as i32).collect(),
            Array::I8(v) => v.iter().map(|&x| x as i32).collect(),
            Array::U16(v) => v.iter().map(|&x| x as i32).collect(),
            Array::I16(v) => v.iter().map(|&x| x as i32).collect(),
            _ => return Err(bad(a)),
        })
    }

    /// Optional variants: `Ok(None)` when the key is absent, an error when its type is wrong.
    pub fn opt<T>(&self, key: &str, f: impl Fn(&Self, &str) -> KResult<T>) -> KResult<Option<T>> {
        if self.contains(key) {
            f(self, key).map(Some)
        } else {
            Ok(None)
        }
    }
}

fn wrong(key: &str, expected: &'static str, v: &Value) -> ErrorKind {
    ErrorKind::WrongType {
        key: key.to_string(),
        expected,
        found: v.value_type(),
    }
}

fn wrong_array(key: &str, expected: &'static str, _a: &Array) -> ErrorKind {
    ErrorKind::WrongType {
        key: key.to_string(),
        expected,
        found: crate::value::ValueType::Array,
    }
}
