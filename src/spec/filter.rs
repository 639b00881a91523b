//! The restricted filter language of job specs: `column op literal`, `IN (...)`, `IS [NOT] NULL`,
//! joined by `AND` / `OR` with parentheses. Never raw SQL: the parser yields a tree whose columns
//! are checked against the live catalog and whose literals are bound as parameters.

use super::ident::Ident;
use std::fmt;

/// A comparison operator allowed in a filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Op {
    pub fn sql(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "<>",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }
}

/// A literal value. All are bound as text and cast to the column's own type by the database,
/// so `'42'` and `42` mean the same thing to an integer column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Literal {
    Text(String),
    Integer(i64),
    Bool(bool),
}

impl Literal {
    pub fn as_bind(&self) -> String {
        match self {
            Literal::Text(s) => s.clone(),
            Literal::Integer(n) => n.to_string(),
            Literal::Bool(b) => b.to_string(),
        }
    }
}

/// A parsed filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filter {
    Compare {
        column: Ident,
        op: Op,
        value: Literal,
    },
    In {
        column: Ident,
        values: Vec<Literal>,
        negated: bool,
    },
    IsNull {
        column: Ident,
        negated: bool,
    },
    And(Vec<Filter>),
    Or(Vec<Filter>),
}

impl Filter {
    /// Every column the filter names, for validation against the catalog.
    pub fn columns(&self) -> Vec<&Ident> {
        match self {
            Filter::Compare { column, .. }
            | Filter::In { column, .. }
            | Filter::IsNull { column, .. } => {
                vec![column]
            }
            Filter::And(parts) | Filter::Or(parts) => {
                parts.iter().flat_map(|p| p.columns()).collect()
            }
        }
    }

    /// Every `(column, literal)` pair, to check that each literal casts to its column's type.
    pub fn literals(&self) -> Vec<(&Ident, &Literal)> {
        match self {
            Filter::Compare { column, value, .. } => vec![(column, value)],
            Filter::In { column, values, .. } => values.iter().map(|v| (column, v)).collect(),
            Filter::IsNull { .. } => Vec::new(),
            Filter::And(parts) | Filter::Or(parts) => {
                parts.iter().flat_map(|p| p.literals()).collect()
            }
        }
    }

    /// Parses the filter text; the error names the offending token and its character position.
    pub fn parse(text: &str) -> Result<Filter, String> {
        let tokens = tokenize(text)?;
        if tokens.is_empty() {
            return Err("the filter is empty: leave `filter` out instead".into());
        }
        let mut p = Parser { tokens, pos: 0 };
        let f = p.or_expr(0)?;
        if let Some((tok, at)) = p.tokens.get(p.pos) {
            return Err(format!("unexpected {tok} at character {}", at + 1));
        }
        Ok(f)
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Int(i64),
    Op(Op),
    LParen,
    RParen,
    Comma,
}

impl fmt::Display for Tok {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Ident(s) => write!(f, "`{s}`"),
            Tok::Str(s) => write!(f, "string '{s}'"),
            Tok::Int(n) => write!(f, "number {n}"),
            Tok::Op(o) => write!(f, "`{}`", o.sql()),
            Tok::LParen => f.write_str("`(`"),
            Tok::RParen => f.write_str("`)`"),
            Tok::Comma => f.write_str("`,`"),
        }
    }
}

fn tokenize(text: &str) -> Result<Vec<(Tok, usize)>, String> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let (at, c) = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => (out.push((Tok::LParen, at)), i += 1).1,
            ')' => (out.push((Tok::RParen, at)), i += 1).1,
            ',' => (out.push((Tok::Comma, at)), i += 1).1,
            '\'' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => {
                            return Err(format!(
                                "unterminated string starting at character {}",
                                at + 1
                            ));
                        }
                        Some((_, '\'')) if matches!(chars.get(i + 1), Some((_, '\''))) => {
                            s.push('\'');
                            i += 2;
                        }
                        Some((_, '\'')) => {
                            i += 1;
                            break;
                        }
                        Some((_, ch)) => {
                            s.push(*ch);
                            i += 1;
                        }
                    }
                }
                out.push((Tok::Str(s), at));
            }
            '=' | '!' | '<' | '>' => {
                let next = chars.get(i + 1).map(|(_, c)| *c);
                let (op, len) = match (c, next) {
                    ('=', _) => (Op::Eq, 1),
                    ('!', Some('=')) => (Op::Ne, 2),
                    ('<', Some('>')) => (Op::Ne, 2),
                    ('<', Some('=')) => (Op::Le, 2),
                    ('>', Some('=')) => (Op::Ge, 2),
                    ('<', _) => (Op::Lt, 1),
                    ('>', _) => (Op::Gt, 1),
                    _ => return Err(format!("unexpected `{c}` at character {}", at + 1)),
                };
                out.push((Tok::Op(op), at));
                i += len;
            }
            c if c.is_ascii_digit() || c == '-' => {
                let start = i;
                i += 1;
                while i < chars.len() && chars[i].1.is_ascii_digit() {
                    i += 1;
                }
                let s: String = chars[start..i].iter().map(|(_, c)| c).collect();
                let n = s
                    .parse()
                    .map_err(|_| format!("`{s}` at character {} is not a whole number", at + 1))?;
                out.push((Tok::Int(n), at));
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].1.is_ascii_alphanumeric() || chars[i].1 == '_') {
                    i += 1;
                }
                out.push((
                    Tok::Ident(chars[start..i].iter().map(|(_, c)| c).collect()),
                    at,
                ));
            }
            other => {
                return Err(format!(
                    "unexpected `{other}` at character {}: filters allow columns, comparisons, \
                     'strings', numbers, IN, IS NULL, AND, OR and parentheses",
                    at + 1
                ));
            }
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<(Tok, usize)>,
    pos: usize,
}

/// Deeper nesting than this is rejected rather than risking the stack on hostile input.
const MAX_DEPTH: usize = 32;

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos).map(|(t, _)| t)
    }

    fn keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(s)) if s.eq_ignore_ascii_case(word))
    }

    fn here(&self) -> String {
        match self.tokens.get(self.pos) {
            Some((t, at)) => format!("{t} at character {}", at + 1),
            None => "the end of the filter".into(),
        }
    }

    fn or_expr(&mut self, depth: usize) -> Result<Filter, String> {
        if depth > MAX_DEPTH {
            return Err("the filter is nested too deeply".into());
        }
        let mut parts = vec![self.and_expr(depth)?];
        while self.keyword("or") {
            self.pos += 1;
            parts.push(self.and_expr(depth)?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Filter::Or(parts)
        })
    }

    fn and_expr(&mut self, depth: usize) -> Result<Filter, String> {
        let mut parts = vec![self.atom(depth)?];
        while self.keyword("and") {
            self.pos += 1;
            parts.push(self.atom(depth)?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Filter::And(parts)
        })
    }

    fn atom(&mut self, depth: usize) -> Result<Filter, String> {
        if self.peek() == Some(&Tok::LParen) {
            self.pos += 1;
            let inner = self.or_expr(depth + 1)?;
            if self.peek() != Some(&Tok::RParen) {
                return Err(format!("expected `)` but found {}", self.here()));
            }
            self.pos += 1;
            return Ok(inner);
        }
        let column = match self.peek() {
            Some(Tok::Ident(s)) if !is_reserved(s) => Ident::new(s)?,
            _ => return Err(format!("expected a column name but found {}", self.here())),
        };
        self.pos += 1;
        if self.keyword("is") {
            self.pos += 1;
            let negated = self.keyword("not");
            if negated {
                self.pos += 1;
            }
            if !self.keyword("null") {
                return Err(format!("expected NULL but found {}", self.here()));
            }
            self.pos += 1;
            return Ok(Filter::IsNull { column, negated });
        }
        let negated = self.keyword("not");
        if negated {
            self.pos += 1;
        }
        if self.keyword("in") {
            self.pos += 1;
            if self.peek() != Some(&Tok::LParen) {
                return Err(format!("expected `(` after IN but found {}", self.here()));
            }
            self.pos += 1;
            let mut values = vec![self.literal()?];
            while self.peek() == Some(&Tok::Comma) {
                self.pos += 1;
                values.push(self.literal()?);
            }
            if self.peek() != Some(&Tok::RParen) {
                return Err(format!("expected `,` or `)` but found {}", self.here()));
            }
            self.pos += 1;
            return Ok(Filter::In {
                column,
                values,
                negated,
            });
        }
        if negated {
            return Err(format!("expected IN after NOT but found {}", self.here()));
        }
        let op = match self.peek() {
            Some(Tok::Op(op)) => *op,
            _ => {
                return Err(format!(
                    "expected a comparison, IN or IS after `{column}` but found {}",
                    self.here()
                ));
            }
        };
        self.pos += 1;
        let value = self.literal()?;
        Ok(Filter::Compare { column, op, value })
    }

    fn literal(&mut self) -> Result<Literal, String> {
        let lit = match self.peek() {
            Some(Tok::Str(s)) => Literal::Text(s.clone()),
            Some(Tok::Int(n)) => Literal::Integer(*n),
            Some(Tok::Ident(s)) if s.eq_ignore_ascii_case("true") => Literal::Bool(true),
            Some(Tok::Ident(s)) if s.eq_ignore_ascii_case("false") => Literal::Bool(false),
            _ => {
                return Err(format!(
                    "expected a 'string', a number, true or false but found {} (compare with NULL using IS NULL)",
                    self.here()
                ));
            }
        };
        self.pos += 1;
        Ok(lit)
    }
}

fn is_reserved(word: &str) -> bool {
    ["and", "or", "not", "in", "is", "null", "true", "false"]
        .iter()
        .any(|r| r.eq_ignore_ascii_case(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        let f = Filter::parse("lifecycle_stage = 'deleted'").unwrap();
        assert!(matches!(f, Filter::Compare { op: Op::Eq, .. }));
        let f = Filter::parse("status IN ('closed', 'banned') AND (plan <> 'free' OR seats >= 10)")
            .unwrap();
        let Filter::And(parts) = f else {
            panic!("not an AND")
        };
        assert_eq!(parts.len(), 2);
        assert!(matches!(&parts[1], Filter::Or(p) if p.len() == 2));
        let f = Filter::parse("purged_at is not null").unwrap();
        assert_eq!(
            f,
            Filter::IsNull {
                column: Ident::new("purged_at").unwrap(),
                negated: true
            }
        );
        let f = Filter::parse("name = 'O''Brien'").unwrap();
        assert!(matches!(f, Filter::Compare { value: Literal::Text(ref s), .. } if s == "O'Brien"));
    }

    #[test]
    fn rejects_anything_that_is_not_the_grammar() {
        for bad in [
            "",
            "1 = 1",
            "status = 'a'; DROP TABLE runs",
            "status = 'a' --",
            "status = \"a\"",
            "status = NULL",
            "status",
            "(status = 'a'",
            "status IN ()",
            "a = 'x' OR",
            "f(x) = 1",
            "a.b = 1",
            "status = 'unterminated",
        ] {
            assert!(Filter::parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!("{}a = 1{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(Filter::parse(&deep).is_err());
    }
}
