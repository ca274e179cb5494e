//! Reads a spanned TOML tree against a schema, collecting every error instead of stopping at the
//! first one, so `validate` can report them all with their positions.

use crate::diag::{line_col, Diagnostic};
use std::ops::Range;
use toml_edit::{Item, TableLike, Value};

pub(crate) struct Walker<'s> {
    src: &'s str,
    pub(crate) errors: Vec<Diagnostic>,
}

/// One table being read: remembers which keys the schema knows, so the rest are reported.
pub(crate) struct TableReader<'t> {
    pub(crate) path: String,
    table: &'t dyn TableLike,
    span: Option<Range<usize>>,
    known: Vec<&'static str>,
}

pub(crate) fn item_span(item: &Item) -> Option<Range<usize>> {
    match item {
        Item::Value(v) => v.span(),
        Item::Table(t) => t.span(),
        Item::ArrayOfTables(a) => a.span(),
        Item::None => None,
    }
}

fn join(path: &str, key: &str) -> String {
    let key = if key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        key.to_string()
    } else {
        format!("{key:?}")
    };
    if path.is_empty() {
        key
    } else {
        format!("{path}.{key}")
    }
}

impl<'s> Walker<'s> {
    pub(crate) fn new(src: &'s str) -> Self {
        Walker {
            src,
            errors: Vec::new(),
        }
    }

    pub(crate) fn error(&mut self, span: Option<Range<usize>>, message: impl Into<String>) {
        let (line, col) = line_col(self.src, span);
        self.errors.push(Diagnostic {
            line,
            col,
            message: message.into(),
        });
    }

    /// Reports every key of `t` that the schema did not ask for.
    pub(crate) fn finish(&mut self, t: TableReader<'_>) {
        for (key, _) in t.table.iter() {
            if !t.known.contains(&key) {
                let span = t
                    .table
                    .get_key_value(key)
                    .and_then(|(k, _)| k.span())
                    .or(t.span.clone());
                self.error(span, format!("unknown key `{}`", join(&t.path, key)));
            }
        }
    }

    pub(crate) fn table<'t>(
        &mut self,
        path: &str,
        item: &'t Item,
        span: Option<Range<usize>>,
    ) -> Option<TableReader<'t>> {
        match item.as_table_like() {
            Some(table) => Some(TableReader {
                path: path.to_string(),
                table,
                span: item_span(item).or(span),
                known: Vec::new(),
            }),
            None => {
                let msg = format!("`{path}` must be a table, not {}", item.type_name());
                self.error(item_span(item).or(span), msg);
                None
            }
        }
    }
}

/// A value together with where it stands in the file and its dotted key, for error messages.
pub(crate) struct Field<'t> {
    pub(crate) path: String,
    pub(crate) item: &'t Item,
    pub(crate) span: Option<Range<usize>>,
}

impl<'t> TableReader<'t> {
    pub(crate) fn span(&self) -> Option<Range<usize>> {
        self.span.clone()
    }

    /// Marks `key` as known and returns it if present.
    pub(crate) fn field(&mut self, key: &'static str) -> Option<Field<'t>> {
        self.known.push(key);
        let (k, item) = self.table.get_key_value(key)?;
        Some(Field {
            path: join(&self.path, key),
            item,
            span: item_span(item).or_else(|| k.span()).or(self.span.clone()),
        })
    }

    /// Every entry, for free-form tables such as `[tags.set]`.
    pub(crate) fn entries(&self) -> Vec<(String, Option<Range<usize>>, Field<'t>)> {
        self.table
            .iter()
            .map(|(key, item)| {
                let key_span = self
                    .table
                    .get_key_value(key)
                    .and_then(|(k, _)| k.span())
                    .or(self.span.clone());
                let field = Field {
                    path: join(&self.path, key),
                    item,
                    span: item_span(item).or(key_span.clone()),
                };
                (key.to_string(), key_span, field)
            })
            .collect()
    }
}

impl Field<'_> {
    pub(crate) fn str(&self, w: &mut Walker<'_>) -> Option<String> {
        match self.item.as_str() {
            Some(s) => Some(s.to_string()),
            None => {
                self.wrong_type(w, "a string");
                None
            }
        }
    }

    pub(crate) fn bool(&self, w: &mut Walker<'_>) -> Option<bool> {
        match self.item.as_bool() {
            Some(b) => Some(b),
            None => {
                self.wrong_type(w, "a boolean (true or false)");
                None
            }
        }
    }

    pub(crate) fn u64(&self, w: &mut Walker<'_>) -> Option<u64> {
        match self.item.as_integer() {
            Some(i) if i > 0 => Some(i as u64),
            Some(_) => {
                w.error(
                    self.span.clone(),
                    format!("`{}` must be positive", self.path),
                );
                None
            }
            None => {
                self.wrong_type(w, "an integer");
                None
            }
        }
    }

    /// An array of strings, each with its own span so a bad element is pointed at exactly.
    pub(crate) fn str_array(
        &self,
        w: &mut Walker<'_>,
    ) -> Option<Vec<(String, Option<Range<usize>>)>> {
        let Some(arr) = self.item.as_array() else {
            self.wrong_type(w, "an array of strings");
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (i, v) in arr.iter().enumerate() {
            match v {
                Value::String(s) => out.push((s.value().to_string(), v.span())),
                other => {
                    ok = false;
                    let msg = format!(
                        "`{}[{i}]` must be a string, not {}",
                        self.path,
                        other.type_name()
                    );
                    w.error(other.span().or(self.span.clone()), msg);
                }
            }
        }
        ok.then_some(out)
    }

    pub(crate) fn wrong_type(&self, w: &mut Walker<'_>, expected: &str) {
        let msg = format!(
            "`{}` must be {expected}, not {}",
            self.path,
            self.item.type_name()
        );
        w.error(self.span.clone(), msg);
    }

    pub(crate) fn invalid(&self, w: &mut Walker<'_>, why: impl std::fmt::Display) {
        w.error(self.span.clone(), format!("`{}`: {why}", self.path));
    }
}
