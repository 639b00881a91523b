//! Key-prefix templates: `runs/{key}/`, `{experiment_id}/{key}/`. A template is a directory
//! with at least one placeholder, and each value rendered into it stays one path segment.

use super::Ident;

/// A key-prefix template: literal text and `{column}` placeholders. `{key}` and `{owner}` name
/// the subject's key and owner; any other name is a column of the `from` node's table.
#[derive(Debug, Clone, PartialEq)]
pub struct Template(pub Vec<Part>);

#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(String),
    Column(Ident),
}

/// The template as written: `runs/{key}/`.
impl std::fmt::Display for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for p in &self.0 {
            match p {
                Part::Text(t) => f.write_str(t)?,
                Part::Column(c) => write!(f, "{{{c}}}")?,
            }
        }
        Ok(())
    }
}

impl Template {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("`{text}` has an unclosed `{{`"))?;
            parts.push(Part::Column(Ident::new(&rest[open + 1..open + close])?));
            rest = &rest[open + close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("`{text}` has a `}}` without `{{`"));
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        if !parts.iter().any(|p| matches!(p, Part::Column(_))) {
            return Err(format!(
                "`{text}` has no placeholder, so every subject would share one prefix: use e.g. `runs/{{key}}/`"
            ));
        }
        if text.starts_with('/') {
            return Err(format!(
                "`{text}` starts with `/`: object keys have no root (`runs/{{key}}/`)"
            ));
        }
        if !text.ends_with('/') {
            return Err(format!(
                "`{text}` must end with `/`: a prefix is a directory (`runs/{{key}}/`)"
            ));
        }
        Ok(Template(parts))
    }

    pub fn columns(&self) -> impl Iterator<Item = &Ident> {
        self.0.iter().filter_map(|p| match p {
            Part::Column(c) => Some(c),
            Part::Text(_) => None,
        })
    }

    /// Fills the template. Each value must be non-empty and free of `/`, so it stays one segment.
    pub fn render(&self, value: impl Fn(&Ident) -> Option<String>) -> Result<String, String> {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Column(c) => {
                    let v = value(c).ok_or_else(|| format!("`{{{c}}}` is NULL"))?;
                    if v.is_empty() || v.contains('/') || v == "." || v == ".." {
                        return Err(format!("`{{{c}}}` = {v:?} is not a single path segment"));
                    }
                    out.push_str(&v);
                }
            }
        }
        Ok(out)
    }
}
