//! Building a [`Config`] from its layers: built-in defaults, then the TOML file, then
//! `SLUICE_*` environment variables, merged with figment; then deserializing the merged
//! tree with key-path errors, validating, and resolving upstream API keys.
//!
//! Errors are attributed to the layer a bad value came from: the environment variable
//! that set the key (or one of its parents), else the file.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use super::{Config, ConfigError};

/// Read when no `--config` is given, relative to the working directory.
pub(crate) const DEFAULT_PATH: &str = "config/sluice.toml";
const ENV_PREFIX: &str = "SLUICE_";
/// Separates key levels in variable names: `SLUICE_SERVER__LISTEN`.
const ENV_SEPARATOR: &str = "__";
/// Not a config key: left for the command line's config path, should it read one.
const CONFIG_PATH_VAR: &str = "SLUICE_CONFIG";

/// The process environment; a `SLUICE_*` variable whose value is not UTF-8 is an error
/// rather than silently ignored. Other non-UTF-8 variables are skipped.
pub(super) fn process_env() -> Result<Vec<(String, String)>, ConfigError> {
    let mut env = Vec::new();
    for (name, value) in std::env::vars_os() {
        let Ok(name) = name.into_string() else {
            continue;
        };
        match value.into_string() {
            Ok(value) => env.push((name, value)),
            Err(_) if name.starts_with(ENV_PREFIX) => {
                return Err(ConfigError::Parse {
                    origin: name,
                    message: "value is not valid UTF-8".to_owned(),
                });
            }
            Err(_) => {}
        }
    }
    Ok(env)
}

/// See [`Config::load`].
pub(super) fn load(path: Option<&Path>, env: Vec<(String, String)>) -> Result<Config, ConfigError> {
    let file = ConfigFile::read(path)?;
    let overlay = EnvOverlay::parse(&env, &secret_var_names(file.as_ref(), &env))?;
    let origins = Origins {
        file: file.as_ref(),
        env: &overlay.paths,
    };

    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    if let Some(file) = &file {
        figment = figment.merge(Toml::string(&file.text));
    }
    let mut merged: Dict = figment
        .merge(EnvLayer(overlay.layer.clone()))
        .extract()
        .map_err(|err| ConfigError::Parse {
            origin: file
                .as_ref()
                .map_or_else(|| "config".to_owned(), |f| f.name.clone()),
            message: one_line(&err.kind.to_string()),
        })?;
    overlay.apply_indexed(&mut merged)?;

    let mut config =
        deserialize(&Value::from(merged)).map_err(|(key, message)| ConfigError::Invalid {
            origin: origins.of(&key),
            key,
            message,
        })?;
    config
        .validate()
        .map_err(|err| err.with_origin(|key| origins.of(key)))?;

    let env: HashMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    resolve_api_keys(&mut config, |name| env.get(name).copied())?;
    resolve_client_keys(&mut config, |name| env.get(name).copied())?;
    Ok(config)
}

/// Fills `auth.client_keys` from the variable `client_keys_env` names: a
/// comma-separated list of `name:key` or bare `key` entries.
fn resolve_client_keys<'a>(
    config: &mut Config,
    lookup: impl Fn(&str) -> Option<&'a str>,
) -> Result<(), ConfigError> {
    let Some(var) = &config.auth.client_keys_env else {
        return Ok(());
    };
    let key = "auth.client_keys_env";
    let value = lookup(var).ok_or_else(|| {
        ConfigError::invalid(key, format!("environment variable {var} is not set"))
    })?;
    config.auth.client_keys = super::parse_client_keys(value)
        .map_err(|why| ConfigError::invalid(key, format!("environment variable {var}: {why}")))?;
    Ok(())
}

/// Fills each upstream's `api_key` from the variable its `api_key_env` names.
fn resolve_api_keys<'a>(
    config: &mut Config,
    lookup: impl Fn(&str) -> Option<&'a str>,
) -> Result<(), ConfigError> {
    for (i, upstream) in config.upstreams.iter_mut().enumerate() {
        let Some(var) = &upstream.api_key_env else {
            continue;
        };
        let key = format!("upstreams[{i}].api_key_env");
        match lookup(var) {
            Some(value) if !value.trim().is_empty() => {
                upstream.api_key = Some(super::Secret::new(value.trim()));
            }
            Some(_) => {
                return Err(ConfigError::invalid(
                    key,
                    format!("environment variable {var} is empty"),
                ));
            }
            None => {
                return Err(ConfigError::invalid(
                    key,
                    format!("environment variable {var} is not set"),
                ));
            }
        }
    }
    Ok(())
}

/// The config file's name as shown in errors, its text and its parsed table.
struct ConfigFile {
    name: String,
    text: String,
    table: toml::Table,
}

impl ConfigFile {
    /// `path`, or [`DEFAULT_PATH`] when it exists, or `None` (built-in defaults only).
    fn read(path: Option<&Path>) -> Result<Option<Self>, ConfigError> {
        let path = match path {
            Some(path) => path,
            None if Path::new(DEFAULT_PATH).is_file() => Path::new(DEFAULT_PATH),
            None => return Ok(None),
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let name = path.display().to_string();
        // Parsed here too (figment's TOML provider parses again) for an error that says
        // line and column in one line, and to tell which keys the file sets.
        let table = text
            .parse::<toml::Table>()
            .map_err(|err| ConfigError::Parse {
                origin: name.clone(),
                message: syntax_message(&text, &err),
            })?;
        Ok(Some(Self { name, text, table }))
    }

    /// Whether the file sets `key` (a path like `upstreams[1].name`) or one of its parents.
    fn sets(&self, key: &str) -> bool {
        let mut node: Option<&toml::Value> = None;
        for segment in key_segments(key) {
            node = match (node, segment) {
                (None, Segment::Key(k)) => self.table.get(k),
                (Some(toml::Value::Table(t)), Segment::Key(k)) => t.get(k),
                (Some(toml::Value::Array(a)), Segment::Index(i)) => a.get(i),
                (Some(_), _) => return true,
                (None, Segment::Index(_)) => None,
            };
            if node.is_none() {
                return false;
            }
        }
        node.is_some()
    }
}

/// A TOML syntax error as `line L, column C: message`, on one line.
fn syntax_message(text: &str, err: &toml::de::Error) -> String {
    let message = one_line(err.message());
    let Some(span) = err.span() else {
        return message;
    };
    let before = text.get(..span.start).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |at| at + 1);
    let column = before[line_start..].chars().count() + 1;
    format!("line {line}, column {column}: {message}")
}

fn one_line(text: &str) -> String {
    text.split('\n')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Names of variables the configuration uses for secrets (`api_key_env`,
/// `client_keys_env`), so a secret kept in, say, `SLUICE_OPENAI_KEY` is not mistaken
/// for a config override. Also [`CONFIG_PATH_VAR`].
fn secret_var_names(file: Option<&ConfigFile>, env: &[(String, String)]) -> HashSet<String> {
    let mut names = HashSet::from([CONFIG_PATH_VAR.to_owned()]);
    if let Some(file) = file {
        let upstreams = file.table.get("upstreams").and_then(toml::Value::as_array);
        for upstream in upstreams.into_iter().flatten() {
            if let Some(name) = upstream.get("api_key_env").and_then(toml::Value::as_str) {
                names.insert(name.to_owned());
            }
        }
        let auth = file.table.get("auth");
        if let Some(name) = auth
            .and_then(|a| a.get("client_keys_env"))
            .and_then(toml::Value::as_str)
        {
            names.insert(name.to_owned());
        }
    }
    for (name, value) in env {
        let upper = name.to_ascii_uppercase();
        if name.starts_with(ENV_PREFIX)
            && (upper.ends_with("__API_KEY_ENV") || upper.ends_with("__CLIENT_KEYS_ENV"))
        {
            names.insert(value.trim().to_owned());
        }
    }
    names
}

/// The `SLUICE_*` variables, split into plain keys (merged by figment) and keys of one
/// `[[upstreams]]` item (`SLUICE_UPSTREAMS__0__BASE_URL`), which figment cannot index
/// and are applied to the merged tree afterwards.
struct EnvOverlay {
    layer: Dict,
    indexed: Vec<IndexedVar>,
    /// Key path each variable sets (`server.listen`, `upstreams[0].base_url`) and its name.
    paths: Vec<(String, String)>,
}

struct IndexedVar {
    name: String,
    index: usize,
    /// Key path inside the upstream; empty to replace the whole item.
    rest: Vec<String>,
    value: Value,
}

impl EnvOverlay {
    fn parse(env: &[(String, String)], skip: &HashSet<String>) -> Result<Self, ConfigError> {
        let mut vars: Vec<&(String, String)> = env
            .iter()
            .filter(|(name, _)| name.starts_with(ENV_PREFIX) && !skip.contains(name))
            .collect();
        vars.sort();

        let mut overlay = Self {
            layer: Dict::new(),
            indexed: Vec::new(),
            paths: Vec::new(),
        };
        for (name, raw) in vars {
            let segments: Vec<String> = name[ENV_PREFIX.len()..]
                .split(ENV_SEPARATOR)
                .map(str::to_ascii_lowercase)
                .collect();
            let key = segments.join(".");
            if segments.iter().any(String::is_empty) {
                return Err(ConfigError::Invalid {
                    origin: Some(name.clone()),
                    key,
                    message: "malformed variable name, expected SLUICE_<SECTION>__<KEY>".to_owned(),
                });
            }
            // Values are parsed like figment's `Env`: numbers, booleans, `[..]` arrays and
            // `{..}` tables are typed, anything else is a string.
            let value: Value = match raw.parse() {
                Ok(value) => value,
                Err(never) => match never {},
            };
            match segments.as_slice() {
                [first, index, rest @ ..] if first == "upstreams" => {
                    let index: usize = index.parse().map_err(|_| ConfigError::Invalid {
                        origin: Some(name.clone()),
                        key: key.clone(),
                        message: "expected an upstream index, as in SLUICE_UPSTREAMS__0__BASE_URL"
                            .to_owned(),
                    })?;
                    let suffix: String = rest.iter().map(|k| format!(".{k}")).collect();
                    overlay
                        .paths
                        .push((format!("upstreams[{index}]{suffix}"), name.clone()));
                    overlay.indexed.push(IndexedVar {
                        name: name.clone(),
                        index,
                        rest: rest.to_vec(),
                        value,
                    });
                }
                _ => {
                    overlay.paths.push((key, name.clone()));
                    set_path(&mut overlay.layer, &segments, value);
                }
            }
        }
        overlay.indexed.sort_by_key(|var| var.index);
        Ok(overlay)
    }

    /// Applies the `SLUICE_UPSTREAMS__<n>__...` variables to the merged tree. Index `n`
    /// one past the end adds an upstream.
    fn apply_indexed(&self, merged: &mut Dict) -> Result<(), ConfigError> {
        // A non-array `upstreams` is reported when the tree is deserialized.
        let Some(Value::Array(_, upstreams)) = merged.get_mut("upstreams") else {
            return Ok(());
        };
        for var in &self.indexed {
            if var.index == upstreams.len() {
                upstreams.push(Value::from(Dict::new()));
            }
            let Some(upstream) = upstreams.get_mut(var.index) else {
                return Err(ConfigError::Invalid {
                    origin: Some(var.name.clone()),
                    key: format!("upstreams[{}]", var.index),
                    message: format!(
                        "no such upstream: there are {n}, and a new one must be upstreams[{n}]",
                        n = upstreams.len()
                    ),
                });
            };
            set_value_path(upstream, &var.rest, var.value.clone());
        }
        Ok(())
    }
}

/// Sets `path` in `dict` to `value`, creating (or replacing non-table values with)
/// intermediate tables.
fn set_path(dict: &mut Dict, path: &[String], value: Value) {
    match path {
        [] => {}
        [last] => {
            dict.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let child = dict
                .entry(first.clone())
                .or_insert_with(|| Value::from(Dict::new()));
            set_value_path(child, rest, value);
        }
    }
}

fn set_value_path(target: &mut Value, path: &[String], value: Value) {
    if path.is_empty() {
        *target = value;
        return;
    }
    if !matches!(target, Value::Dict(..)) {
        *target = Value::from(Dict::new());
    }
    if let Value::Dict(_, dict) = target {
        set_path(dict, path, value);
    }
}

/// The plain environment keys as a figment layer.
struct EnvLayer(Dict);

impl Provider for EnvLayer {
    fn metadata(&self) -> Metadata {
        Metadata::named("`SLUICE_` environment variables")
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Map::from([(Profile::Default, self.0.clone())]))
    }
}

/// Tells which layer a key's value came from, for error messages.
struct Origins<'a> {
    file: Option<&'a ConfigFile>,
    env: &'a [(String, String)],
}

impl Origins<'_> {
    /// The variable that set `key` or a parent of it (the most specific one); else,
    /// walking up from `key` through its parents, the file if it sets that key or a
    /// variable that set something inside it (say `upstreams[1].name` for a missing
    /// `upstreams[1].base_url`); else the file.
    fn of(&self, key: &str) -> Option<String> {
        let setting_var = self
            .env
            .iter()
            .filter(|(path, _)| is_within(key, path))
            .max_by_key(|(path, _)| path.len());
        if let Some((_, var)) = setting_var {
            return Some(var.clone());
        }
        let mut scope = Some(key);
        while let Some(current) = scope {
            if let Some(file) = self.file.filter(|f| f.sets(current)) {
                return Some(file.name.clone());
            }
            if let Some((_, var)) = self.env.iter().find(|(path, _)| is_within(path, current)) {
                return Some(var.clone());
            }
            scope = current.rfind(['.', '[']).map(|at| &current[..at]);
        }
        self.file.map(|f| f.name.clone())
    }
}

/// Whether key path `inner` is `outer` or lies inside it.
fn is_within(inner: &str, outer: &str) -> bool {
    inner
        .strip_prefix(outer)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

/// `upstreams[1].name` as `[Key("upstreams"), Index(1), Key("name")]`.
fn key_segments(key: &str) -> Vec<Segment<'_>> {
    let mut segments = Vec::new();
    for part in key.split('.') {
        let mut pieces = part.split('[');
        if let Some(name) = pieces.next().filter(|name| !name.is_empty()) {
            segments.push(Segment::Key(name));
        }
        for piece in pieces {
            if let Ok(index) = piece.trim_end_matches(']').parse() {
                segments.push(Segment::Index(index));
            }
        }
    }
    segments
}

/// Deserializes the merged tree; an error comes back as `(key path, message)`.
fn deserialize(value: &Value) -> Result<Config, (String, String)> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let join = |field: &str| match path.as_str() {
            "." => field.to_owned(),
            parent => format!("{parent}.{field}"),
        };
        let path_key = if path == "." {
            String::new()
        } else {
            path.clone()
        };
        use figment::error::Kind;
        match &err.inner().kind {
            // The path already ends with the unknown key.
            Kind::UnknownField(field, _) if field == "api_key" => (
                path_key,
                "unknown key (keys are not read from the file: set api_key_env to the name of \
                 the environment variable holding it)"
                    .to_owned(),
            ),
            Kind::UnknownField(..) => (path_key, "unknown key".to_owned()),
            Kind::MissingField(field) => (join(field), "required key is missing".to_owned()),
            Kind::UnknownVariant(found, expected) => {
                let expected: Vec<String> = expected.iter().map(|v| format!("{v:?}")).collect();
                (
                    path_key,
                    format!(
                        "unknown value {found:?}, expected one of {}",
                        expected.join(", ")
                    ),
                )
            }
            kind => (path_key, in_toml_terms(&one_line(&kind.to_string()))),
        }
    })
}

/// serde's type words in the words of TOML and of this config's docs.
fn in_toml_terms(message: &str) -> String {
    let message = message
        .replace("found map", "found a table")
        .replace("found sequence", "found an array")
        .replace("expected a sequence", "expected an array")
        .replace(
            "expected a duration",
            "expected a duration such as \"250ms\", \"30s\" or \"1h\"",
        );
    // `expected struct ServerConfig` names a Rust type; the user wrote a TOML value.
    match message.find("expected struct ") {
        Some(at) => format!("{}expected a table", &message[..at]),
        None => message,
    }
}
