//! A path-tracking reader over a parsed YAML tree. Every value read knows its key path
//! (`model_list[2].litellm_params.model`), resolves `os.environ/VAR`, accepts numbers written as
//! strings (as environment values always are) and in YAML 1.1's forms with `_` separators
//! (`tpm: 20_000`, which LiteLLM's PyYAML reads as a number and serde_yaml's YAML 1.2 as a
//! string), and every key a section does not read is reported once as "not implemented; ignored".

use super::ConfigError;
use serde_yaml::{Mapping, Value};
use std::collections::HashMap;

/// Where `os.environ/VAR` looks: the config's `environment_variables` first, then the process.
pub struct Env<'a> {
    pub overrides: &'a HashMap<String, String>,
}

impl Env<'_> {
    pub fn lookup(&self, var: &str) -> Option<String> {
        self.overrides
            .get(var)
            .cloned()
            .or_else(|| std::env::var(var).ok())
    }

    /// Resolves `os.environ/VAR` strings; other strings are returned as they are.
    pub fn resolve(&self, path: &str, s: &str) -> Result<String, ConfigError> {
        match s.strip_prefix("os.environ/") {
            Some(var) => self.lookup(var.trim()).ok_or_else(|| {
                ConfigError::new(
                    path,
                    format!("environment variable {var} is not set (referenced as \"{s}\")"),
                )
            }),
            None => Ok(s.to_string()),
        }
    }
}

/// A mapping being read; unread keys are collected as warnings by [`Section::finish`].
pub struct Section<'a> {
    pub path: String,
    map: Option<&'a Mapping>,
    read: Vec<&'a str>,
    env: &'a Env<'a>,
}

impl<'a> Section<'a> {
    /// `value` must be a mapping (or null/absent, read as empty).
    pub fn new(
        path: impl Into<String>,
        value: Option<&'a Value>,
        env: &'a Env<'a>,
    ) -> Result<Self, ConfigError> {
        let path = path.into();
        let map = match value {
            None | Some(Value::Null) => None,
            Some(Value::Mapping(m)) => Some(m),
            Some(other) => {
                return Err(ConfigError::new(
                    &path,
                    format!("expected a mapping, found {}", type_name(other)),
                ))
            }
        };
        Ok(Section {
            path,
            map,
            read: Vec::new(),
            env,
        })
    }

    pub fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The raw value of `key` (marks it read). Null counts as absent.
    pub fn value(&mut self, key: &'a str) -> Option<&'a Value> {
        self.read.push(key);
        self.map.and_then(|m| m.get(key)).filter(|v| !v.is_null())
    }

    /// Marks keys as read without reading them (accepted and deliberately ignored silently).
    pub fn accept(&mut self, keys: &[&'a str]) {
        self.read.extend_from_slice(keys);
    }

    pub fn env(&self) -> &'a Env<'a> {
        self.env
    }

    pub fn string(&mut self, key: &'a str) -> Result<Option<String>, ConfigError> {
        let path = self.key_path(key);
        match self.value(key) {
            None => Ok(None),
            Some(Value::String(s)) => self.env.resolve(&path, s).map(Some),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(Value::Bool(b)) => Ok(Some(b.to_string())),
            Some(other) => Err(ConfigError::new(
                path,
                format!("expected a string, found {}", type_name(other)),
            )),
        }
    }

    pub fn f64(&mut self, key: &'a str) -> Result<Option<f64>, ConfigError> {
        let path = self.key_path(key);
        match self.value(key) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(Value::String(s)) => {
                let s = self.env.resolve(&path, s)?;
                yaml11_number(&s).map(Some).ok_or_else(|| {
                    ConfigError::new(path, format!("expected a number, found \"{s}\""))
                })
            }
            Some(other) => Err(ConfigError::new(
                path,
                format!("expected a number, found {}", type_name(other)),
            )),
        }
    }

    /// A non-negative number, checked against `[min, max]`.
    pub fn f64_in(&mut self, key: &'a str, min: f64, max: f64) -> Result<Option<f64>, ConfigError> {
        let path = self.key_path(key);
        match self.f64(key)? {
            Some(v) if !(min..=max).contains(&v) || v.is_nan() => Err(ConfigError::new(
                path,
                format!("{v} is out of range (expected {min} to {max})"),
            )),
            other => Ok(other),
        }
    }

    pub fn u64(&mut self, key: &'a str) -> Result<Option<u64>, ConfigError> {
        let path = self.key_path(key);
        match self.f64(key)? {
            None => Ok(None),
            Some(v) if v >= 0.0 && v.fract() == 0.0 && v <= u64::MAX as f64 => Ok(Some(v as u64)),
            Some(v) => Err(ConfigError::new(
                path,
                format!("expected a whole number of 0 or more, found {v}"),
            )),
        }
    }

    pub fn bool(&mut self, key: &'a str) -> Result<Option<bool>, ConfigError> {
        let path = self.key_path(key);
        match self.value(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) => {
                let s = self.env.resolve(&path, s)?;
                match s.trim().to_ascii_lowercase().as_str() {
                    "true" | "yes" | "1" | "on" => Ok(Some(true)),
                    "false" | "no" | "0" | "off" => Ok(Some(false)),
                    _ => Err(ConfigError::new(
                        path,
                        format!("expected true or false, found \"{s}\""),
                    )),
                }
            }
            Some(other) => Err(ConfigError::new(
                path,
                format!("expected true or false, found {}", type_name(other)),
            )),
        }
    }

    /// A sub-mapping.
    pub fn section(&mut self, key: &'a str) -> Result<Section<'a>, ConfigError> {
        let path = self.key_path(key);
        let value = self.value(key);
        Section::new(path, value, self.env)
    }

    /// A list of strings (a single string is accepted as a one-item list).
    pub fn string_list(&mut self, key: &'a str) -> Result<Option<Vec<String>>, ConfigError> {
        let path = self.key_path(key);
        match self.value(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(vec![self.env.resolve(&path, s)?])),
            Some(Value::Sequence(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => self.env.resolve(&format!("{path}[{i}]"), s),
                    Value::Number(n) => Ok(n.to_string()),
                    other => Err(ConfigError::new(
                        format!("{path}[{i}]"),
                        format!("expected a string, found {}", type_name(other)),
                    )),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(other) => Err(ConfigError::new(
                path,
                format!("expected a list of strings, found {}", type_name(other)),
            )),
        }
    }

    /// A value converted to JSON with every `os.environ/` string inside resolved
    /// (for provider-specific parameters such as `vertex_credentials`).
    pub fn json(&mut self, key: &'a str) -> Result<Option<serde_json::Value>, ConfigError> {
        let path = self.key_path(key);
        match self.value(key) {
            None => Ok(None),
            Some(v) => to_json(&path, v, self.env).map(Some),
        }
    }

    /// Keys present in the mapping, in file order.
    pub fn keys(&self) -> Vec<&'a str> {
        self.map
            .map(|m| m.keys().filter_map(|k| k.as_str()).collect())
            .unwrap_or_default()
    }

    /// Reports every key that was not read as "not implemented; ignored".
    pub fn finish(self, warnings: &mut Vec<String>) {
        if let Some(map) = self.map {
            for key in map.keys() {
                let name = key
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{key:?}"));
                if !self.read.contains(&name.as_str()) {
                    warnings.push(format!(
                        "{}: not implemented by Switchboard yet; ignored",
                        if self.path.is_empty() {
                            name.clone()
                        } else {
                            format!("{}.{name}", self.path)
                        }
                    ));
                }
            }
        }
    }
}

/// A number written as text: plain decimal (`30`, `0.5`, `1e-6`) or YAML 1.1's forms with `_`
/// between digits (`20_000`, `1_000.5`), which PyYAML (and Python's `int()`) accept. Underscores
/// must sit between digits, as in both; `NaN`/`inf` are not numbers here.
pub fn yaml11_number(s: &str) -> Option<f64> {
    let s = s.trim();
    if !s.contains('_') {
        return s.parse::<f64>().ok().filter(|v| v.is_finite());
    }
    let bytes = s.as_bytes();
    let between_digits = bytes.iter().enumerate().all(|(i, &b)| {
        b != b'_'
            || (i > 0
                && bytes[i - 1].is_ascii_digit()
                && bytes.get(i + 1).is_some_and(|n| n.is_ascii_digit()))
    });
    if !between_digits {
        return None;
    }
    let plain: String = s.chars().filter(|&c| c != '_').collect();
    yaml11_number(&plain)
}

/// A list of mappings, each read as a [`Section`] with an indexed path.
pub fn sequence<'a>(
    path: &str,
    value: Option<&'a Value>,
) -> Result<Vec<(String, &'a Value)>, ConfigError> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Sequence(items)) => Ok(items
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("{path}[{i}]"), v))
            .collect()),
        Some(other) => Err(ConfigError::new(
            path,
            format!("expected a list, found {}", type_name(other)),
        )),
    }
}

pub fn to_json(path: &str, v: &Value, env: &Env) -> Result<serde_json::Value, ConfigError> {
    Ok(match v {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                serde_json::Value::from(i)
            } else if let Some(u) = n.as_u64() {
                serde_json::Value::from(u)
            } else {
                serde_json::Value::from(n.as_f64().unwrap_or(0.0))
            }
        }
        Value::String(s) => serde_json::Value::String(env.resolve(path, s)?),
        Value::Sequence(items) => serde_json::Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, x)| to_json(&format!("{path}[{i}]"), x, env))
                .collect::<Result<_, _>>()?,
        ),
        Value::Mapping(m) => {
            let mut out = serde_json::Map::new();
            for (k, x) in m {
                let key = k
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{k:?}"));
                let child = format!("{path}.{key}");
                out.insert(key, to_json(&child, x, env)?);
            }
            serde_json::Value::Object(out)
        }
        Value::Tagged(t) => to_json(path, &t.value, env)?,
    })
}

pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}
