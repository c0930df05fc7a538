//! YAML read as kubectl reads it: `sigs.k8s.io/yaml`, which is go-yaml v2 (YAML 1.1 scalars)
//! followed by a conversion to JSON. KubeRay reads `serveConfigV2` the same way before it sends
//! the config to Ray, so both manifests and serve configs go through [`documents`].
//!
//! What differs from YAML 1.2 (and from `serde-saphyr`'s inference), as go-yaml v2's `resolve`
//! does it, for plain (unquoted, untagged) scalars only:
//! - booleans: `y Y yes Yes YES on On ON true True TRUE` and `n N no No NO off Off OFF false
//!   False FALSE`; no other spelling;
//! - null: empty, `~`, `null`, `Null`, `NULL`;
//! - integers as Go's `strconv.ParseInt(s, 0, 64)` reads them once every `_` is removed:
//!   `0777` and `0o777` octal, `0x1F`/`0X1F` hex, `0b1010` binary, `1_000`, a leading `+`;
//!   larger ones as unsigned, then as a (lossy) number;
//! - floats matching `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?` (so `08` is 8.0),
//!   and `.inf`/`.nan` forms, which JSON cannot carry (kubectl fails; so do we);
//! - timestamps (`2001-12-14`) stay strings, base-60 numbers (`1:20`) stay strings.
//!
//! Quoted and block scalars are strings, whatever they look like; `!!str`, `!!int`, `!!float`,
//! `!!bool` and `!!null` tags are honoured; other tags are ignored (the text is kept).
//! Then the JSON conversion: a number that is a whole value prints without a fraction in JSON,
//! so `1.0` is the integer 1; mapping keys become strings (`1` → `"1"`, `yes` → `"true"`), and a
//! null or collection key is an error. Merge keys (`<<`) work as in go-yaml v2: merged keys are
//! written in document order, a later key wins. A key given twice is an error.

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle, Span, Tag};
use thiserror::Error;

/// Why a YAML text could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{message}{}", line.map(|l| format!(" at line {l}")).unwrap_or_default())]
pub struct YamlError {
    /// 1-based line of the problem, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl YamlError {
    fn at(span: &Span, message: impl Into<String>) -> Self {
        Self::at_line(span.start.line(), message)
    }

    fn at_line(line: usize, message: impl Into<String>) -> Self {
        YamlError {
            line: Some(line),
            message: message.into(),
        }
    }
}

/// Most values an alias may copy in one text (go-yaml v2 refuses "excessive aliasing" too).
const MAX_ALIAS_COPIES: usize = 1_000_000;

/// Every document of `text` as JSON values, as `kubectl` would send them (empty documents are null).
pub fn documents(text: &str) -> Result<Vec<Value>, YamlError> {
    let mut reader = Reader {
        parser: Parser::new_from_str(text),
        anchors: HashMap::new(),
        alias_budget: MAX_ALIAS_COPIES,
    };
    let mut documents = Vec::new();
    loop {
        let (event, span) = reader.next()?;
        match event {
            Event::StreamEnd => return Ok(documents),
            Event::DocumentStart(..) => {
                reader.anchors.clear();
                let value = match reader.next()? {
                    (Event::DocumentEnd, _) => Value::Null,
                    (event, span) => {
                        let value = reader.node(event, span)?;
                        reader.expect_document_end()?;
                        value
                    }
                };
                documents.push(value);
            }
            Event::StreamStart => {}
            _ if !is_node(&event) => {}
            _ => {
                return Err(YamlError::at(
                    &span,
                    "unexpected content outside a document",
                ));
            }
        }
    }
}

/// The one document of `text` (null when there is none).
pub fn document(text: &str) -> Result<Value, YamlError> {
    let mut all = documents(text)?;
    if all.len() > 1 {
        return Err(YamlError {
            line: None,
            message: format!(
                "{} documents where one is expected; remove the `---` separators",
                all.len()
            ),
        });
    }
    Ok(all.pop().unwrap_or(Value::Null))
}

fn is_node(event: &Event<'_>) -> bool {
    matches!(
        event,
        Event::Scalar(..)
            | Event::SequenceStart(..)
            | Event::MappingStart(..)
            | Event::Alias(_)
            | Event::SequenceEnd
            | Event::MappingEnd
    )
}

struct Reader<'input> {
    parser: Parser<'input, serde_saphyr::granit_parser::StrInput<'input>>,
    anchors: HashMap<usize, Value>,
    alias_budget: usize,
}

/// A collection being read.
enum Open {
    Sequence {
        anchor: usize,
        items: Vec<Value>,
    },
    Mapping {
        anchor: usize,
        entries: Map<String, Value>,
        /// The key read, waiting for its value; `Merge` for `<<`.
        key: Option<Key>,
        /// Keys written explicitly (not by a merge), to refuse the ones given twice.
        written: Vec<String>,
    },
}

enum Key {
    /// The key and its line.
    Name(String, usize),
    /// `<<`, on its line.
    Merge(usize),
}

impl<'input> Reader<'input> {
    fn next(&mut self) -> Result<(Event<'input>, Span), YamlError> {
        match self.parser.next_event() {
            Some(Ok(next)) => Ok(next),
            Some(Err(err)) => Err(YamlError {
                line: Some(err.marker().line()),
                message: err.info(),
            }),
            None => Err(YamlError {
                line: None,
                message: "unexpected end of the text".into(),
            }),
        }
    }

    /// Skips comments and other presentation events up to the end of the document.
    fn expect_document_end(&mut self) -> Result<(), YamlError> {
        loop {
            let (event, span) = self.next()?;
            match event {
                Event::DocumentEnd => return Ok(()),
                _ if is_node(&event) => {
                    return Err(YamlError::at(&span, "more than one node in a document"));
                }
                _ => {}
            }
        }
    }

    /// Reads the node that starts with `event`, iteratively (nesting depth costs no stack).
    fn node(&mut self, event: Event<'input>, span: Span) -> Result<Value, YamlError> {
        let mut stack: Vec<Open> = Vec::new();
        let mut next = Some((event, span));
        loop {
            let (event, span) = match next.take() {
                Some(pending) => pending,
                None => self.next()?,
            };
            let finished: Value = match event {
                Event::Scalar(text, style, anchor, tag) => {
                    let is_key = matches!(stack.last(), Some(Open::Mapping { key: None, .. }));
                    if is_key && style == ScalarStyle::Plain && tag.is_none() && text == "<<" {
                        if let Some(Open::Mapping { key, .. }) = stack.last_mut() {
                            *key = Some(Key::Merge(span.start.line()));
                        }
                        continue;
                    }
                    let resolved = scalar(&text, style, tag.as_deref(), &span)?;
                    if is_key {
                        let name = resolved_key(&resolved, &text, &span)?;
                        if anchor != 0 {
                            self.anchors.insert(anchor, json(resolved, &text, &span)?);
                        }
                        if let Some(Open::Mapping { key, .. }) = stack.last_mut() {
                            *key = Some(Key::Name(name, span.start.line()));
                        }
                        continue;
                    }
                    let value = json(resolved, &text, &span)?;
                    if anchor != 0 {
                        self.anchors.insert(anchor, value.clone());
                    }
                    value
                }
                Event::Alias(id) => {
                    let value = self
                        .anchors
                        .get(&id)
                        .cloned()
                        .ok_or_else(|| YamlError::at(&span, "alias to an unknown anchor"))?;
                    let size = count_values(&value);
                    self.alias_budget = self.alias_budget.checked_sub(size).ok_or_else(|| {
                        YamlError::at(&span, "the document contains excessive aliasing")
                    })?;
                    value
                }
                Event::SequenceStart(_, anchor, _) => {
                    stack.push(Open::Sequence {
                        anchor,
                        items: Vec::new(),
                    });
                    continue;
                }
                Event::MappingStart(_, anchor, _) => {
                    stack.push(Open::Mapping {
                        anchor,
                        entries: Map::new(),
                        key: None,
                        written: Vec::new(),
                    });
                    continue;
                }
                Event::SequenceEnd => match stack.pop() {
                    Some(Open::Sequence { anchor, items }) => {
                        let value = Value::Array(items);
                        if anchor != 0 {
                            self.anchors.insert(anchor, value.clone());
                        }
                        value
                    }
                    _ => return Err(YamlError::at(&span, "unexpected end of a sequence")),
                },
                Event::MappingEnd => match stack.pop() {
                    Some(Open::Mapping {
                        anchor, entries, ..
                    }) => {
                        let value = Value::Object(entries);
                        if anchor != 0 {
                            self.anchors.insert(anchor, value.clone());
                        }
                        value
                    }
                    _ => return Err(YamlError::at(&span, "unexpected end of a mapping")),
                },
                _ if !is_node(&event) => continue,
                _ => return Err(YamlError::at(&span, "unexpected YAML event")),
            };
            match stack.last_mut() {
                None => return Ok(finished),
                Some(Open::Sequence { items, .. }) => items.push(finished),
                Some(Open::Mapping {
                    entries,
                    key,
                    written,
                    ..
                }) => match key.take() {
                    None => {
                        *key = Some(Key::Name(key_string(finished, &span)?, span.start.line()));
                    }
                    Some(Key::Merge(line)) => merge(entries, finished, line)?,
                    Some(Key::Name(name, line)) => {
                        if written.contains(&name) {
                            return Err(YamlError::at_line(
                                line,
                                format!("key `{name}` is given twice in the same mapping"),
                            ));
                        }
                        written.push(name.clone());
                        entries.insert(name, finished);
                    }
                },
            }
        }
    }
}

/// Writes the entries of a `<<` value (a mapping, or a sequence of mappings where the earlier
/// ones win) into `entries`, as go-yaml v2 does.
fn merge(entries: &mut Map<String, Value>, value: Value, line: usize) -> Result<(), YamlError> {
    let want_map = || {
        YamlError::at_line(
            line,
            "map merge requires a map or a sequence of maps as the value",
        )
    };
    match value {
        Value::Object(map) => {
            entries.extend(map);
            Ok(())
        }
        Value::Array(maps) => {
            for map in maps.into_iter().rev() {
                match map {
                    Value::Object(map) => entries.extend(map),
                    _ => return Err(want_map()),
                }
            }
            Ok(())
        }
        _ => Err(want_map()),
    }
}

/// A scalar mapping key as JSON needs it: a string, as sigs.k8s.io/yaml converts it.
fn resolved_key(key: &Resolved, text: &str, span: &Span) -> Result<String, YamlError> {
    Ok(match key {
        Resolved::Str => text.to_string(),
        Resolved::Bool(flag) => flag.to_string(),
        Resolved::Int(int) => int.to_string(),
        Resolved::Uint(int) => int.to_string(),
        Resolved::BigInt(_) => {
            return Err(YamlError::at(
                span,
                format!("the key `{text}` is too large an integer; quote it"),
            ));
        }
        Resolved::Float(float) => match format_g32(*float).as_str() {
            "inf" => ".inf".to_string(),
            "-inf" => "-.inf".to_string(),
            "NaN" => ".nan".to_string(),
            other => other.to_string(),
        },
        Resolved::Null => return Err(YamlError::at(span, "a mapping key is null; quote it")),
    })
}

/// A mapping key given by an alias.
fn key_string(key: Value, span: &Span) -> Result<String, YamlError> {
    match key {
        Value::String(text) => Ok(text),
        Value::Bool(flag) => Ok(flag.to_string()),
        Value::Number(number) => Ok(number.to_string()),
        Value::Null => Err(YamlError::at(span, "a mapping key is null; quote it")),
        Value::Array(_) | Value::Object(_) => Err(YamlError::at(
            span,
            "a mapping key is a sequence or a mapping; JSON keys are strings",
        )),
    }
}

/// Go's `strconv.FormatFloat(f, 'g', -1, 32)`: the shortest digits of the 32-bit value, with an
/// exponent (`1e+06`) below 1e-4 or from 1e6 on.
fn format_g32(float: f64) -> String {
    let short = float as f32;
    let scientific = format!("{short:e}");
    let (mantissa, exponent) = scientific
        .split_once('e')
        .map_or((scientific.as_str(), 0), |(m, e)| {
            (m, e.parse::<i32>().unwrap_or(0))
        });
    if short != 0.0 && !(-4..6).contains(&exponent) {
        let sign = if exponent < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exponent.abs())
    } else {
        format!("{short}")
    }
}

fn count_values(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(count_values).sum::<usize>(),
        Value::Object(map) => 1 + map.values().map(count_values).sum::<usize>(),
        _ => 1,
    }
}

/// What one scalar is, as go-yaml v2 resolves it (tags included).
fn scalar(
    text: &str,
    style: ScalarStyle,
    tag: Option<&Tag>,
    span: &Span,
) -> Result<Resolved, YamlError> {
    let core = tag.and_then(Tag::core_suffix);
    let resolved = match (tag, core) {
        // A tag we do not know, or the non-specific `!`: the text as written.
        (Some(_), None) | (Some(_), Some("str" | "binary" | "timestamp" | "seq" | "map")) => {
            return Ok(Resolved::Str);
        }
        (None, _) if style != ScalarStyle::Plain => return Ok(Resolved::Str),
        _ => resolve(text),
    };
    Ok(match (core, resolved) {
        (None, resolved) => resolved,
        (Some("null"), Resolved::Null) => Resolved::Null,
        (Some("bool"), Resolved::Bool(flag)) => Resolved::Bool(flag),
        (Some("int"), number @ (Resolved::Int(_) | Resolved::Uint(_) | Resolved::BigInt(_))) => {
            number
        }
        (Some("float"), number @ Resolved::Float(_)) => number,
        (Some("float"), Resolved::Int(int)) => Resolved::Float(int as f64),
        (Some("float"), Resolved::Uint(int)) => Resolved::Float(int as f64),
        (Some(wanted), _) => {
            return Err(YamlError::at(
                span,
                format!("cannot decode `{text}` as a !!{wanted}"),
            ));
        }
    })
}

/// What go-yaml v2's `resolve` makes of a plain scalar.
#[derive(Debug, PartialEq)]
enum Resolved {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    /// Beyond 64 bits (go-yaml keeps a big.Int); JSON gets its digits.
    BigInt(f64),
    Float(f64),
    Str,
}

fn resolve(text: &str) -> Resolved {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Resolved::Null,
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return Resolved::Bool(true);
        }
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return Resolved::Bool(false);
        }
        ".nan" | ".NaN" | ".NAN" => return Resolved::Float(f64::NAN),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Resolved::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Resolved::Float(f64::NEG_INFINITY),
        _ => {}
    }
    let Some(first) = text.bytes().next() else {
        return Resolved::Null;
    };
    match first {
        b'.' => go_parse_float(text).map_or(Resolved::Str, Resolved::Float),
        b'+' | b'-' | b'0'..=b'9' => {
            if looks_like_timestamp(text) {
                return Resolved::Str;
            }
            let plain: String = text.chars().filter(|c| *c != '_').collect();
            if let Some(int) = go_parse_int(&plain) {
                return int;
            }
            if is_yaml_float(&plain)
                && let Some(float) = go_parse_float(&plain)
            {
                return Resolved::Float(float);
            }
            // `-0b…` is read by the base-0 parse already (Go's ParseInt knows `0b`).
            Resolved::Str
        }
        _ => Resolved::Str,
    }
}

/// Go's `strconv.ParseInt(s, 0, 64)`, then `ParseUint`, then a big integer: sign, then `0x`,
/// `0o`, `0b` (either case) or a leading `0` for octal, else decimal. No underscores here.
fn go_parse_int(text: &str) -> Option<Resolved> {
    let (negative, unsigned) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let lower = unsigned.to_ascii_lowercase();
    let (radix, digits) = if let Some(rest) = lower.strip_prefix("0x") {
        (16, rest)
    } else if let Some(rest) = lower.strip_prefix("0o") {
        (8, rest)
    } else if let Some(rest) = lower.strip_prefix("0b") {
        (2, rest)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, &lower[1..])
    } else {
        (10, lower.as_str())
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = u128::from_str_radix(digits, radix).ok();
    match magnitude {
        Some(m) if negative => {
            if m <= i64::MAX as u128 + 1 {
                // -(2^63) fits; everything else is the negation of a positive i64.
                Some(Resolved::Int((m as i128).wrapping_neg() as i64))
            } else {
                Some(Resolved::BigInt(-(m as f64)))
            }
        }
        Some(m) if m <= i64::MAX as u128 => Some(Resolved::Int(m as i64)),
        Some(m) if m <= u64::MAX as u128 => Some(Resolved::Uint(m as u64)),
        Some(m) => Some(Resolved::BigInt(m as f64)),
        None => {
            // Beyond 128 bits: still an integer to go-yaml (big.Int); only its size matters to us.
            let float = digits
                .chars()
                .filter_map(|c| c.to_digit(radix))
                .fold(0f64, |acc, d| acc * f64::from(radix) + f64::from(d));
            Some(Resolved::BigInt(if negative { -float } else { float }))
        }
    }
}

/// go-yaml v2's `yamlStyleFloat`: `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
fn is_yaml_float(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut at = 0;
    if matches!(bytes.first(), Some(b'+' | b'-')) {
        at += 1;
    }
    let digits = |from: usize| {
        bytes[from..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
    };
    if bytes.get(at) == Some(&b'.') {
        let n = digits(at + 1);
        if n == 0 {
            return false;
        }
        at += 1 + n;
    } else {
        let n = digits(at);
        if n == 0 {
            return false;
        }
        at += n;
        if bytes.get(at) == Some(&b'.') {
            at += 1 + digits(at + 1);
        }
    }
    if matches!(bytes.get(at), Some(b'e' | b'E')) {
        at += 1;
        if matches!(bytes.get(at), Some(b'+' | b'-')) {
            at += 1;
        }
        let n = digits(at);
        if n == 0 {
            return false;
        }
        at += n;
    }
    at == bytes.len()
}

/// Go's `strconv.ParseFloat(s, 64)` for the decimal forms go-yaml hands it (no hex floats,
/// no `inf`/`nan` words: those are only reached through the `.inf` table above).
fn go_parse_float(text: &str) -> Option<f64> {
    if !is_yaml_float(text) {
        return None;
    }
    text.parse::<f64>().ok()
}

/// go-yaml v2 tries timestamps first (`YYYY-…`); decoded into an untyped value they stay strings.
fn looks_like_timestamp(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() > 4 && bytes[..4].iter().all(u8::is_ascii_digit) && bytes[4] == b'-'
}

/// The JSON form of a resolved scalar, as sigs.k8s.io/yaml's `json.Marshal` writes it.
fn json(resolved: Resolved, text: &str, span: &Span) -> Result<Value, YamlError> {
    Ok(match resolved {
        Resolved::Null => Value::Null,
        Resolved::Bool(flag) => Value::Bool(flag),
        Resolved::Int(int) => Value::Number(Number::from(int)),
        Resolved::Uint(int) => Value::Number(Number::from(int)),
        Resolved::Str => Value::String(text.to_string()),
        Resolved::BigInt(float) | Resolved::Float(float) => {
            if !float.is_finite() {
                return Err(YamlError::at(
                    span,
                    format!(
                        "`{text}` is not a number JSON can carry (kubectl refuses it too); quote it to make it a string"
                    ),
                ));
            }
            whole_number(float)
                .or_else(|| Number::from_f64(float))
                .map_or(Value::Null, Value::Number)
        }
    })
}

/// A float that Go's JSON encoder prints without fraction or exponent (a whole value below
/// 1e21) reads back as an integer: `replicas: 1.0` is 1.
fn whole_number(float: f64) -> Option<Number> {
    if float.fract() != 0.0 || float.abs() >= 1e21 {
        return None;
    }
    if float >= -(2f64.powi(63)) && float < 2f64.powi(63) {
        return Some(Number::from(float as i64));
    }
    if float >= 0.0 && float < 2f64.powi(64) {
        return Some(Number::from(float as u64));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn value(text: &str) -> Value {
        document(&format!("v: {text}\n")).unwrap_or_else(|e| panic!("{text}: {e}"))["v"].clone()
    }

    #[test]
    fn octal_as_kubectl_reads_it() {
        assert_eq!(value("0777"), json!(511));
        assert_eq!(value("0644"), json!(420));
        assert_eq!(value("0o17"), json!(15));
        assert_eq!(value("0O17"), json!(15));
        assert_eq!(value("-017"), json!(-15));
        assert_eq!(value("00"), json!(0));
        // Not octal: go-yaml falls through to its float pattern.
        assert_eq!(value("08"), json!(8));
        assert_eq!(value("0778"), json!(778));
        // Quoted stays a string.
        assert_eq!(value("\"0777\""), json!("0777"));
        assert_eq!(value("'0777'"), json!("0777"));
        assert_eq!(value("!!str 0777"), json!("0777"));
    }

    #[test]
    fn yaml_11_booleans_in_every_spelling() {
        for yes in [
            "y", "Y", "yes", "Yes", "YES", "on", "On", "ON", "true", "True", "TRUE",
        ] {
            assert_eq!(value(yes), json!(true), "{yes}");
            assert_eq!(value(&format!("\"{yes}\"")), json!(yes), "{yes}");
        }
        for no in [
            "n", "N", "no", "No", "NO", "off", "Off", "OFF", "false", "False", "FALSE",
        ] {
            assert_eq!(value(no), json!(false), "{no}");
            assert_eq!(value(&format!("'{no}'")), json!(no), "{no}");
        }
        // Mixed case is not YAML 1.1.
        for text in ["yES", "oN", "tRUE", "nO", "oFf", "yeah", "nope"] {
            assert_eq!(value(text), json!(text), "{text}");
        }
    }

    #[test]
    fn nulls() {
        for text in ["", "~", "null", "Null", "NULL"] {
            assert_eq!(value(text), Value::Null, "{text:?}");
        }
        assert_eq!(value("nULL"), json!("nULL"));
        assert_eq!(value("\"null\""), json!("null"));
        assert_eq!(value("!!null ''"), Value::Null);
    }

    #[test]
    fn other_integer_forms() {
        assert_eq!(value("0x1F"), json!(31));
        assert_eq!(value("0X1f"), json!(31));
        assert_eq!(value("-0x1F"), json!(-31));
        assert_eq!(value("0b1010"), json!(10));
        assert_eq!(value("-0b1010"), json!(-10));
        assert_eq!(value("1_000"), json!(1000));
        assert_eq!(value("0x_FF"), json!(255));
        assert_eq!(value("+12"), json!(12));
        assert_eq!(value("9223372036854775807"), json!(i64::MAX));
        assert_eq!(value("-9223372036854775808"), json!(i64::MIN));
        assert_eq!(value("18446744073709551615"), json!(u64::MAX));
        assert_eq!(value("0xZ"), json!("0xZ"));
        assert_eq!(value("1_2_3"), json!(123));
    }

    #[test]
    fn floats_and_whole_floats() {
        assert_eq!(value("1.5"), json!(1.5));
        assert_eq!(value(".5"), json!(0.5));
        assert_eq!(value("-.5"), json!(-0.5));
        assert_eq!(value("1e3"), json!(1000));
        assert_eq!(value("1.0"), json!(1));
        assert_eq!(value("2.5e-1"), json!(0.25));
        assert_eq!(value("1_000.5"), json!(1000.5));
        assert_eq!(value("1e21"), json!(1e21));
        for text in [".inf", "-.Inf", "+.INF", ".nan", ".NaN"] {
            let err = document(&format!("v: {text}\n")).expect_err(text);
            assert_eq!(err.line, Some(1), "{text}");
            assert!(err.message.contains(text), "{err}");
        }
        assert_eq!(value("'.inf'"), json!(".inf"));
        assert_eq!(value("1.2.3"), json!("1.2.3"));
        assert_eq!(value("."), json!("."));
    }

    #[test]
    fn strings_go_yaml_does_not_resolve() {
        // Sexagesimal is YAML 1.1 but go-yaml v2 never supported it.
        assert_eq!(value("1:20"), json!("1:20"));
        assert_eq!(value("190:20:30"), json!("190:20:30"));
        // Timestamps stay strings in untyped values.
        assert_eq!(value("2001-12-14"), json!("2001-12-14"));
        assert_eq!(
            value("2001-12-14t21:59:43.10-05:00"),
            json!("2001-12-14t21:59:43.10-05:00")
        );
        assert_eq!(
            value("rayproject/ray:2.60.0"),
            json!("rayproject/ray:2.60.0")
        );
        assert_eq!(value("2.60.0"), json!("2.60.0"));
        assert_eq!(value("500m"), json!("500m"));
        assert_eq!(value("2Gi"), json!("2Gi"));
        assert_eq!(value("=").as_str(), Some("="));
        assert_eq!(value("!custom 12"), json!("12"));
    }

    #[test]
    fn block_scalars_are_strings() {
        let doc = document("a: |\n  0777\nb: >\n  yes\n").expect("yaml");
        assert_eq!(doc, json!({"a": "0777\n", "b": "yes\n"}));
    }

    #[test]
    fn explicit_tags() {
        assert_eq!(value("!!int \"0777\""), json!(511));
        assert_eq!(value("!!float 1"), json!(1));
        assert_eq!(value("!!bool \"yes\""), json!(true));
        let err = document("v: !!int abc\n").expect_err("not an int");
        assert!(err.message.contains("!!int"), "{err}");
    }

    #[test]
    fn keys_become_strings() {
        let doc = document("1: a\nyes: b\n1.5: c\n0x10: d\n'on': e\n1e6: f\n2.0: g\n0777: h\n")
            .expect("yaml");
        assert_eq!(
            doc,
            json!({"1": "a", "true": "b", "1.5": "c", "16": "d", "on": "e", "1e+06": "f", "2": "g", "511": "h"})
        );
        let err = document("a: 1\n~: 2\n").expect_err("null key");
        assert_eq!(err.line, Some(2));
        let err = document("? [a]\n: 1\n").expect_err("sequence key");
        assert!(err.message.contains("sequence"), "{err}");
    }

    #[test]
    fn duplicate_keys_are_refused_with_their_line() {
        let err = document("a: 1\nb: 2\na: 3\n").expect_err("duplicate");
        assert_eq!(err.line, Some(3));
        assert!(err.message.contains("`a`"), "{err}");
    }

    #[test]
    fn anchors_aliases_and_merge_keys() {
        let doc = document(
            "base: &b {p: 1, q: 2}\nseq: &s [1, 2]\nalias: *s\nmm:\n  <<: *b\n  q: 3\nnn:\n  q: 3\n  <<: *b\nll:\n  <<: [{p: 1}, {p: 2, r: 4}]\n",
        )
        .expect("yaml");
        assert_eq!(doc["alias"], json!([1, 2]));
        assert_eq!(doc["mm"], json!({"p": 1, "q": 3}));
        // go-yaml v2 writes merged keys in document order: a later merge overrides.
        assert_eq!(doc["nn"], json!({"p": 1, "q": 2}));
        // Earlier maps of a merge sequence win.
        assert_eq!(doc["ll"], json!({"p": 1, "r": 4}));
        // `y` and `n` are booleans even as keys, as in go-yaml v2.
        assert_eq!(
            document("y: 1\nn: 2\n").expect("yaml"),
            json!({"true": 1, "false": 2})
        );
        let err = document("a: &a 1\nb:\n  <<: *a\n").expect_err("merge of a scalar");
        assert!(err.message.contains("merge"), "{err}");
        assert!(document("a: *nothing\n").is_err());
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let prev = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        let err = documents(&text).expect_err("bomb");
        assert!(err.message.contains("aliasing"), "{err}");
    }

    #[test]
    fn several_documents_and_empty_ones() {
        let docs = documents("a: 1\n---\n---\nb: yes\n...\n").expect("yaml");
        assert_eq!(docs, vec![json!({"a": 1}), Value::Null, json!({"b": true})]);
        assert_eq!(documents("").expect("empty"), Vec::<Value>::new());
        assert_eq!(
            documents("# only a comment\n").expect("comment"),
            Vec::<Value>::new()
        );
        assert!(document("a: 1\n---\nb: 2\n").is_err());
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let err = documents("a: 1\nb: [1, 2\nc: 3\n").expect_err("unclosed");
        assert!(err.line.is_some(), "{err:?}");
        let err = documents("a: 1\n  b: 2\n").expect_err("bad indentation");
        assert_eq!(err.line, Some(2), "{err:?}");
        assert!(err.to_string().contains("line 2"), "{err}");
    }

    #[test]
    fn deep_nesting_does_not_overflow() {
        let text = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(documents(&text).is_ok());
        let text = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(documents(&text).is_err());
    }

    #[test]
    fn no_panic_on_odd_input() {
        for text in [
            "\u{feff}a: 1",
            "a: \"\\x\"",
            "&a [*a]",
            "- - - -",
            "? ? ?",
            "{a: 1, a: 2}",
            "!!",
            "%YAML 1.1\n---\na: 0777\n",
            ":",
            "- &x\n- *x",
            "a: !!float .inf",
        ] {
            let _ = documents(text);
        }
        assert_eq!(
            documents("%YAML 1.1\n---\na: 0777\n").expect("directive"),
            vec![json!({"a": 511})]
        );
    }
}

#[cfg(test)]
mod writer_round_trip {
    use super::*;
    use serde_json::json;

    /// YAML we write (serde-saphyr, YAML 1.2) must read back the same through this YAML 1.1
    /// reader: strings that YAML 1.1 would resolve otherwise must come out quoted.
    #[test]
    fn strings_written_by_serde_saphyr_read_back_as_strings() {
        let value = json!({
            "a": "yes", "b": "0777", "c": "y", "d": "1_000", "e": "0x1F", "f": "on",
            "g": "0o17", "h": "08", "i": "N", "j": "Off", "k": "1e3", "l": "~", "m": "0b101",
            "n": ".5", "o": "+1", "p": "2001-12-14", "q": "1:20", "r": "", "s": "null",
            "t": 511, "u": true, "v": 1.5, "w": null,
        });
        let text = serde_saphyr::to_string(&value).expect("write");
        assert_eq!(document(&text).expect("read"), value, "{text}");
    }
}
