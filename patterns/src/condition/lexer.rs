//! Splits condition source into tokens with their byte positions.

use super::ConditionError;

/// An error at a byte position of the source; turned into a 1-based character column at the end.
#[derive(Debug)]
pub(crate) struct PErr {
    pub(crate) pos: usize,
    pub(crate) msg: String,
}

impl PErr {
    pub(crate) fn new(pos: usize, msg: impl Into<String>) -> PErr {
        PErr {
            pos,
            msg: msg.into(),
        }
    }

    pub(crate) fn into_error(self, src: &str) -> ConditionError {
        let pos = self.pos.min(src.len());
        // `pos` is always a char boundary, but never trust it enough to panic.
        let column = src.get(..pos).map_or(1, |s| s.chars().count() + 1);
        ConditionError {
            column,
            message: self.msg,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok {
    Int(i64),
    Float(f64),
    Str(String),
    Ident(String),
    True,
    False,
    Null,
    And,
    Or,
    Not,
    In,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Match,
    NotMatch,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Dot,
    Eof,
}

#[derive(Clone, Debug)]
pub(crate) struct Token {
    pub(crate) tok: Tok,
    /// Byte range in the source.
    pub(crate) pos: usize,
    pub(crate) end: usize,
}

impl Token {
    /// How the token is named in error messages.
    pub(crate) fn describe(&self, src: &str) -> String {
        match &self.tok {
            Tok::Eof => "end of input".to_string(),
            Tok::Str(_) => "a string".to_string(),
            Tok::Int(_) | Tok::Float(_) => "a number".to_string(),
            _ => format!("'{}'", src.get(self.pos..self.end).unwrap_or("?")),
        }
    }
}

pub(crate) fn is_keyword(word: &str) -> bool {
    keyword(word).is_some()
}

fn keyword(word: &str) -> Option<Tok> {
    Some(match word {
        "true" => Tok::True,
        "false" => Tok::False,
        "null" => Tok::Null,
        "and" => Tok::And,
        "or" => Tok::Or,
        "not" => Tok::Not,
        "in" => Tok::In,
        _ => return None,
    })
}

pub(crate) fn lex(src: &str) -> Result<Vec<Token>, PErr> {
    let bytes = src.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        let two = |next: u8| bytes.get(i + 1) == Some(&next);
        let (tok, len) = match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'(' => (Tok::LParen, 1),
            b')' => (Tok::RParen, 1),
            b'[' => (Tok::LBracket, 1),
            b']' => (Tok::RBracket, 1),
            b',' => (Tok::Comma, 1),
            b'.' => (Tok::Dot, 1),
            b'+' => (Tok::Plus, 1),
            b'-' => (Tok::Minus, 1),
            b'*' => (Tok::Star, 1),
            b'/' => (Tok::Slash, 1),
            b'%' => (Tok::Percent, 1),
            b'=' if two(b'=') => (Tok::Eq, 2),
            b'=' if two(b'~') => (Tok::Match, 2),
            b'=' => return Err(PErr::new(i, "unexpected '='; use '==' to compare")),
            b'!' if two(b'=') => (Tok::Ne, 2),
            b'!' if two(b'~') => (Tok::NotMatch, 2),
            b'!' => (Tok::Not, 1),
            b'<' if two(b'=') => (Tok::Le, 2),
            b'<' => (Tok::Lt, 1),
            b'>' if two(b'=') => (Tok::Ge, 2),
            b'>' => (Tok::Gt, 1),
            b'&' if two(b'&') => (Tok::And, 2),
            b'&' => return Err(PErr::new(i, "unexpected '&'; use '&&' or 'and'")),
            b'|' if two(b'|') => (Tok::Or, 2),
            b'|' => return Err(PErr::new(i, "unexpected '|'; use '||' or 'or'")),
            b'\'' | b'"' => {
                let (s, end) = lex_string(src, i)?;
                (Tok::Str(s), end - i)
            }
            b'0'..=b'9' => lex_number(src, i)?,
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                let mut end = i + 1;
                while end < bytes.len()
                    && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_')
                {
                    end += 1;
                }
                let word = &src[i..end];
                let tok = keyword(word).unwrap_or_else(|| Tok::Ident(word.to_string()));
                (tok, end - i)
            }
            _ => {
                let ch = src[i..].chars().next().unwrap_or('?');
                return Err(PErr::new(i, format!("unexpected character {ch:?}")));
            }
        };
        i += len;
        toks.push(Token {
            tok,
            pos: start,
            end: i,
        });
    }
    toks.push(Token {
        tok: Tok::Eof,
        pos: src.len(),
        end: src.len(),
    });
    Ok(toks)
}

/// Lexes a number starting at `start`; returns the token and its length in bytes.
fn lex_number(src: &str, start: usize) -> Result<(Tok, usize), PErr> {
    let bytes = src.as_bytes();
    let digits = |mut i: usize| {
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        i
    };
    let mut end = digits(start);
    let mut is_float = false;
    if bytes.get(end) == Some(&b'.') && bytes.get(end + 1).is_some_and(u8::is_ascii_digit) {
        is_float = true;
        end = digits(end + 1);
    }
    if matches!(bytes.get(end), Some(b'e' | b'E')) {
        let mut exp = end + 1;
        if matches!(bytes.get(exp), Some(b'+' | b'-')) {
            exp += 1;
        }
        if !bytes.get(exp).is_some_and(u8::is_ascii_digit) {
            return Err(PErr::new(
                start,
                "invalid number: missing digits in the exponent",
            ));
        }
        is_float = true;
        end = digits(exp);
    }
    if bytes
        .get(end)
        .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
    {
        return Err(PErr::new(
            start,
            "invalid number: a letter follows the digits",
        ));
    }
    let text = &src[start..end];
    if !is_float {
        if let Ok(i) = text.parse::<i64>() {
            return Ok((Tok::Int(i), end - start));
        }
        // Integers beyond the i64 range are read as floats.
    }
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() => Ok((Tok::Float(f), end - start)),
        _ => Err(PErr::new(start, format!("number out of range: {text}"))),
    }
}

/// Lexes a quoted string starting at `start`; returns its value and the byte index after it.
///
/// Escapes: `\\`, `\'`, `\"`, `\n`, `\r`, `\t`, `\0`, `\uXXXX` and `\u{X...}`. A backslash before
/// any other character is kept with that character, so regexes such as `'\d+\.'` read naturally.
fn lex_string(src: &str, start: usize) -> Result<(String, usize), PErr> {
    let quote = src.as_bytes()[start] as char;
    let mut out = String::new();
    let mut chars = src[start + 1..]
        .char_indices()
        .map(|(o, c)| (o + start + 1, c));
    while let Some((pos, c)) = chars.next() {
        match c {
            c if c == quote => return Ok((out, pos + 1)),
            '\\' => {
                let Some((_, e)) = chars.next() else { break };
                match e {
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    '0' => out.push('\0'),
                    '\\' | '\'' | '"' => out.push(e),
                    'u' => out.push(lex_unicode_escape(src, pos, &mut chars)?),
                    other => {
                        out.push('\\');
                        out.push(other);
                    }
                }
            }
            c => out.push(c),
        }
    }
    Err(PErr::new(start, "unterminated string"))
}

fn lex_unicode_escape(
    src: &str,
    pos: usize,
    chars: &mut impl Iterator<Item = (usize, char)>,
) -> Result<char, PErr> {
    let bad = || PErr::new(pos, "invalid \\u escape: expected \\uXXXX or \\u{X...}");
    let rest = &src[pos + 2..];
    let (hex, consumed) = if let Some(braced) = rest.strip_prefix('{') {
        let close = braced.find('}').ok_or_else(bad)?;
        (&braced[..close], close + 2)
    } else {
        (rest.get(..4).ok_or_else(bad)?, 4)
    };
    if hex.is_empty() || hex.len() > 6 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let code = u32::from_str_radix(hex, 16).map_err(|_| bad())?;
    let ch = char::from_u32(code).ok_or_else(|| {
        PErr::new(
            pos,
            format!("invalid \\u escape: U+{code:X} is not a character"),
        )
    })?;
    // All consumed characters are ASCII, so skipping `consumed` chars skips `consumed` bytes.
    for _ in 0..consumed {
        chars.next();
    }
    Ok(ch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(src: &str) -> Vec<Tok> {
        lex(src).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn operators_and_keywords() {
        use Tok::*;
        assert_eq!(
            toks("== != < <= > >= && || ! and or not in =~ !~ + - * / % ( ) [ ] , ."),
            vec![
                Eq, Ne, Lt, Le, Gt, Ge, And, Or, Not, And, Or, Not, In, Match, NotMatch, Plus,
                Minus, Star, Slash, Percent, LParen, RParen, LBracket, RBracket, Comma, Dot, Eof
            ]
        );
        assert_eq!(
            toks("true false null android _x1"),
            vec![
                True,
                False,
                Null,
                Ident("android".into()),
                Ident("_x1".into()),
                Eof
            ]
        );
        assert_eq!(
            toks("a<=b"),
            vec![Ident("a".into()), Le, Ident("b".into()), Eof]
        );
    }

    #[test]
    fn numbers() {
        use Tok::*;
        assert_eq!(toks("0 42 2.5 1e3 1E+2 5e-1"), {
            vec![
                Int(0),
                Int(42),
                Float(2.5),
                Float(1000.0),
                Float(100.0),
                Float(0.5),
                Eof,
            ]
        });
        // `items[0].price`: the `.` after a digit is not a decimal point.
        assert_eq!(
            toks("x[0].y"),
            vec![
                Ident("x".into()),
                LBracket,
                Int(0),
                RBracket,
                Dot,
                Ident("y".into()),
                Eof
            ]
        );
        assert_eq!(toks("1."), vec![Int(1), Dot, Eof]);
        assert_eq!(toks("-5"), vec![Minus, Int(5), Eof]);
        assert_eq!(toks("99999999999999999999"), vec![Float(1e20), Eof]);
        assert!(lex("1e").is_err());
        assert!(lex("1x").is_err());
        assert!(lex("1e400").is_err());
    }

    #[test]
    fn strings_and_positions() {
        let t = lex(r#"ab 'c\'d' "e""#).unwrap();
        assert_eq!(t[1].tok, Tok::Str("c'd".into()));
        assert_eq!((t[1].pos, t[1].end), (3, 9));
        assert_eq!(t[2].tok, Tok::Str("e".into()));
        assert_eq!(t[3].tok, Tok::Eof);
        assert_eq!(t[3].pos, 13);
        assert_eq!(lex(r"'\q'").unwrap()[0].tok, Tok::Str(r"\q".into()));
        assert_eq!(lex("'日本'").unwrap()[0].tok, Tok::Str("日本".into()));
        assert_eq!(
            lex(r"'\u0041\u{42}'").unwrap()[0].tok,
            Tok::Str("AB".into())
        );
        let e = lex("x 'abc").unwrap_err();
        assert_eq!((e.pos, e.msg.as_str()), (2, "unterminated string"));
        assert!(lex(r"'abc\'").is_err());
        assert!(lex(r"'\").is_err());
        assert!(lex(r"'\u{110000}'").is_err());
        assert!(lex(r"'\u{}'").is_err());
        assert!(lex(r"'\u{1234567}'").is_err());
        assert!(lex(r"'\uéééé'").is_err());
    }

    #[test]
    fn error_columns_count_characters() {
        let e = PErr::new("ü ü ".len(), "x").into_error("ü ü #");
        assert_eq!(e.column, 5);
        let e = PErr::new(99, "x").into_error("abc");
        assert_eq!(e.column, 4);
    }
}
