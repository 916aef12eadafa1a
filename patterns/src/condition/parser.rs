//! A recursive-descent parser that resolves field paths, stages and regexes while it builds the tree.

use std::sync::Arc;

use regex_automata::meta::Regex;
use regex_automata::util::syntax;

use super::eval::{eval, AggOp, ArithOp, CmpOp, Expr, Func};
use super::lexer::{PErr, Tok, Token};
use super::value::{Row, Schema, Seg, Val};
use super::NoStageEvents;

/// How deeply parentheses, lists, calls and unary operators may nest.
pub(crate) const MAX_NESTING: usize = 64;
/// How tall the tree may grow, e.g. through a long chain `a + b + c + ...` (bounds the recursion of
/// evaluation and of dropping the tree).
pub(crate) const MAX_HEIGHT: usize = 256;
/// The largest compiled size of one regex (regex-automata's NFA size limit), in bytes.
pub(crate) const REGEX_SIZE_LIMIT: usize = 1 << 20;

const FUNCTIONS: &str = "contains, starts_with, ends_with, lower, upper, len, abs, exists, field, \
                         first, last, count, sum, avg, min, max";

/// From how many strings on a constant `in` list is hashed instead of scanned.
const IN_SET_MIN: usize = 8;

/// A subtree and its height.
struct Node {
    e: Expr,
    h: usize,
}

pub(crate) struct Parser<'a> {
    src: &'a str,
    toks: &'a [Token],
    i: usize,
    nesting: usize,
    stages: &'a [String],
    schema: &'a mut Schema,
}

/// Parses a whole condition.
pub(crate) fn parse(
    src: &str,
    toks: &[Token],
    stages: &[String],
    schema: &mut Schema,
) -> Result<Expr, PErr> {
    let mut p = Parser {
        src,
        toks,
        i: 0,
        nesting: 0,
        stages,
        schema,
    };
    if p.peek() == &Tok::Eof {
        return Err(PErr::new(0, "empty condition"));
    }
    let node = p.expr()?;
    p.expect_end()?;
    Ok(node.e)
}

/// Parses a field path alone (for [`Schema::slot_for`]).
pub(crate) fn parse_path(src: &str, toks: &[Token]) -> Result<Vec<Seg>, PErr> {
    let mut schema = Schema::new();
    let mut p = Parser {
        src,
        toks,
        i: 0,
        nesting: 0,
        stages: &[],
        schema: &mut schema,
    };
    if p.peek() == &Tok::Eof {
        return Err(PErr::new(0, "empty field path"));
    }
    let segs = p.path()?;
    p.expect_end()?;
    Ok(segs)
}

impl Parser<'_> {
    fn tok(&self) -> &Token {
        // The token list always ends with `Eof`, and `bump` never moves past it.
        &self.toks[self.i.min(self.toks.len() - 1)]
    }

    fn peek(&self) -> &Tok {
        &self.tok().tok
    }

    fn peek2(&self) -> &Tok {
        &self.toks[(self.i + 1).min(self.toks.len() - 1)].tok
    }

    fn pos(&self) -> usize {
        self.tok().pos
    }

    fn bump(&mut self) -> Token {
        let t = self.tok().clone();
        if t.tok != Tok::Eof {
            self.i += 1;
        }
        t
    }

    fn found(&self) -> String {
        self.tok().describe(self.src)
    }

    fn expect(&mut self, tok: Tok, what: &str) -> Result<Token, PErr> {
        if *self.peek() == tok {
            Ok(self.bump())
        } else {
            Err(PErr::new(
                self.pos(),
                format!("expected {what}, found {}", self.found()),
            ))
        }
    }

    fn expect_end(&mut self) -> Result<(), PErr> {
        if *self.peek() == Tok::Eof {
            Ok(())
        } else {
            Err(PErr::new(
                self.pos(),
                format!("unexpected {} after a complete expression", self.found()),
            ))
        }
    }

    fn enter(&mut self, pos: usize) -> Result<(), PErr> {
        self.nesting += 1;
        if self.nesting > MAX_NESTING {
            return Err(PErr::new(
                pos,
                format!("condition is nested too deeply (more than {MAX_NESTING} levels)"),
            ));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.nesting -= 1;
    }

    /// Builds a node from its children's heights, folding it into a constant where it can.
    fn node(&self, e: Expr, child_h: usize, pos: usize) -> Result<Node, PErr> {
        if e.is_foldable() {
            let v = eval(&e, &Row::empty(), &NoStageEvents).into_owned();
            return Ok(Node {
                e: Expr::Const(v),
                h: 1,
            });
        }
        let h = child_h + 1;
        if h > MAX_HEIGHT {
            return Err(PErr::new(
                pos,
                format!("expression is too deep (more than {MAX_HEIGHT} nested operators)"),
            ));
        }
        Ok(Node { e, h })
    }

    fn expr(&mut self) -> Result<Node, PErr> {
        self.enter(self.pos())?;
        let node = self.or();
        self.leave();
        node
    }

    fn or(&mut self) -> Result<Node, PErr> {
        let pos = self.pos();
        let first = self.and()?;
        if *self.peek() != Tok::Or {
            return Ok(first);
        }
        let mut h = first.h;
        let mut items = vec![first.e];
        while *self.peek() == Tok::Or {
            self.bump();
            let n = self.and()?;
            h = h.max(n.h);
            items.push(n.e);
        }
        // A constant `true` decides the disjunction; other constants can never be true.
        if items
            .iter()
            .any(|e| matches!(e, Expr::Const(Val::Bool(true))))
        {
            return Ok(const_node(Val::Bool(true)));
        }
        items.retain(|e| !matches!(e, Expr::Const(_)));
        if items.is_empty() {
            return Ok(const_node(Val::Bool(false)));
        }
        self.node(Expr::Or(items.into()), h, pos)
    }

    fn and(&mut self) -> Result<Node, PErr> {
        let pos = self.pos();
        let first = self.comparison()?;
        if *self.peek() != Tok::And {
            return Ok(first);
        }
        let mut h = first.h;
        let mut items = vec![first.e];
        while *self.peek() == Tok::And {
            self.bump();
            let n = self.comparison()?;
            h = h.max(n.h);
            items.push(n.e);
        }
        // A constant that is not `true` decides the conjunction; constant `true`s drop out.
        if items
            .iter()
            .any(|e| matches!(e, Expr::Const(v) if *v != Val::Bool(true)))
        {
            return Ok(const_node(Val::Bool(false)));
        }
        items.retain(|e| !matches!(e, Expr::Const(_)));
        if items.is_empty() {
            return Ok(const_node(Val::Bool(true)));
        }
        self.node(Expr::And(items.into()), h, pos)
    }

    fn comparison(&mut self) -> Result<Node, PErr> {
        let lhs = self.additive()?;
        let op_pos = self.pos();
        let node = match self.peek().clone() {
            Tok::Eq | Tok::Ne | Tok::Lt | Tok::Le | Tok::Gt | Tok::Ge => {
                let op = match self.bump().tok {
                    Tok::Eq => CmpOp::Eq,
                    Tok::Ne => CmpOp::Ne,
                    Tok::Lt => CmpOp::Lt,
                    Tok::Le => CmpOp::Le,
                    Tok::Gt => CmpOp::Gt,
                    _ => CmpOp::Ge,
                };
                let rhs = self.additive()?;
                let h = lhs.h.max(rhs.h);
                self.node(Expr::Cmp(op, Box::new(lhs.e), Box::new(rhs.e)), h, op_pos)?
            }
            Tok::In => {
                self.bump();
                self.membership(lhs, false, op_pos)?
            }
            Tok::Not if *self.peek2() == Tok::In => {
                self.bump();
                self.bump();
                self.membership(lhs, true, op_pos)?
            }
            Tok::Match | Tok::NotMatch => {
                let negated = self.bump().tok == Tok::NotMatch;
                self.regex(lhs, negated, op_pos)?
            }
            _ => return Ok(lhs),
        };
        if matches!(
            self.peek(),
            Tok::Eq
                | Tok::Ne
                | Tok::Lt
                | Tok::Le
                | Tok::Gt
                | Tok::Ge
                | Tok::In
                | Tok::Match
                | Tok::NotMatch
        ) {
            return Err(PErr::new(
                self.pos(),
                format!(
                    "comparisons cannot be chained: add parentheses or use && before {}",
                    self.found()
                ),
            ));
        }
        Ok(node)
    }

    fn membership(&mut self, lhs: Node, negated: bool, pos: usize) -> Result<Node, PErr> {
        let rhs = self.additive()?;
        let h = lhs.h.max(rhs.h);
        // A long constant list of strings becomes a hash set.
        if let Expr::Const(Val::List(items)) = &rhs.e {
            if items.len() >= IN_SET_MIN && items.iter().all(|v| matches!(v, Val::Str(_))) {
                let set = items
                    .iter()
                    .filter_map(|v| match v {
                        Val::Str(s) => Some(s.clone()),
                        _ => None,
                    })
                    .collect();
                let e = Expr::InStrs {
                    negated,
                    needle: Box::new(lhs.e),
                    set: Arc::new(set),
                };
                return self.node(e, h, pos);
            }
        }
        let e = Expr::In {
            negated,
            needle: Box::new(lhs.e),
            haystack: Box::new(rhs.e),
        };
        self.node(e, h, pos)
    }

    fn regex(&mut self, lhs: Node, negated: bool, pos: usize) -> Result<Node, PErr> {
        let lit_pos = self.pos();
        let Tok::Str(pattern) = self.peek().clone() else {
            return Err(PErr::new(
                lit_pos,
                format!(
                    "the right side of =~ and !~ must be a string literal (a regex), found {}",
                    self.found()
                ),
            ));
        };
        self.bump();
        let regex = Regex::builder()
            .syntax(syntax::Config::new().nest_limit(MAX_NESTING as u32))
            .configure(
                Regex::config()
                    .nfa_size_limit(Some(REGEX_SIZE_LIMIT))
                    .onepass_size_limit(Some(REGEX_SIZE_LIMIT))
                    .dfa_size_limit(Some(REGEX_SIZE_LIMIT)),
            )
            .build(&pattern)
            .map_err(|err| PErr::new(lit_pos, format!("invalid regex {pattern:?}: {err}")))?;
        let e = Expr::Regex {
            negated,
            subject: Box::new(lhs.e),
            regex,
        };
        self.node(e, lhs.h, pos)
    }

    fn additive(&mut self) -> Result<Node, PErr> {
        let mut lhs = self.multiplicative()?;
        loop {
            let op = match self.peek() {
                Tok::Plus => ArithOp::Add,
                Tok::Minus => ArithOp::Sub,
                _ => return Ok(lhs),
            };
            let pos = self.bump().pos;
            let rhs = self.multiplicative()?;
            let h = lhs.h.max(rhs.h);
            lhs = self.node(Expr::Arith(op, Box::new(lhs.e), Box::new(rhs.e)), h, pos)?;
        }
    }

    fn multiplicative(&mut self) -> Result<Node, PErr> {
        let mut lhs = self.unary()?;
        loop {
            let op = match self.peek() {
                Tok::Star => ArithOp::Mul,
                Tok::Slash => ArithOp::Div,
                Tok::Percent => ArithOp::Rem,
                _ => return Ok(lhs),
            };
            let pos = self.bump().pos;
            let rhs = self.unary()?;
            let h = lhs.h.max(rhs.h);
            lhs = self.node(Expr::Arith(op, Box::new(lhs.e), Box::new(rhs.e)), h, pos)?;
        }
    }

    fn unary(&mut self) -> Result<Node, PErr> {
        let neg = match self.peek() {
            Tok::Not => false,
            Tok::Minus => true,
            _ => return self.primary(),
        };
        let pos = self.bump().pos;
        self.enter(pos)?;
        let operand = self.unary();
        self.leave();
        let operand = operand?;
        let e = if neg {
            Expr::Neg(Box::new(operand.e))
        } else {
            Expr::Not(Box::new(operand.e))
        };
        self.node(e, operand.h, pos)
    }

    fn primary(&mut self) -> Result<Node, PErr> {
        let pos = self.pos();
        match self.peek().clone() {
            Tok::Int(i) => Ok(self.literal(Val::Int(i))),
            Tok::Float(f) => Ok(self.literal(Val::Float(f))),
            Tok::Str(s) => Ok(self.literal(Val::Str(s.into()))),
            Tok::True => Ok(self.literal(Val::Bool(true))),
            Tok::False => Ok(self.literal(Val::Bool(false))),
            Tok::Null => Ok(self.literal(Val::Null)),
            Tok::LParen => {
                self.bump();
                let inner = self.expr()?;
                self.expect(Tok::RParen, "')' to close the '('")?;
                Ok(inner)
            }
            Tok::LBracket => self.list(),
            Tok::Ident(name) if *self.peek2() == Tok::LParen && name != "field" => {
                self.call(&name, pos)
            }
            Tok::Ident(_) => {
                let segs = self.path()?;
                Ok(Node {
                    e: Expr::Field(self.schema.intern(segs)),
                    h: 1,
                })
            }
            _ => Err(PErr::new(
                pos,
                format!("expected a value, found {}", self.found()),
            )),
        }
    }

    fn literal(&mut self, v: Val) -> Node {
        self.bump();
        const_node(v)
    }

    fn list(&mut self) -> Result<Node, PErr> {
        let open = self.bump().pos;
        self.enter(open)?;
        let mut items = Vec::new();
        let mut h = 0;
        while *self.peek() != Tok::RBracket {
            let n = self.expr()?;
            h = h.max(n.h);
            items.push(n.e);
            if *self.peek() == Tok::Comma {
                self.bump();
            } else if *self.peek() != Tok::RBracket {
                return Err(PErr::new(
                    self.pos(),
                    format!("expected ',' or ']' in the list, found {}", self.found()),
                ));
            }
        }
        self.bump();
        self.leave();
        self.node(Expr::List(items.into()), h, open)
    }

    /// Parses the arguments of a plain function, after its name.
    fn args(&mut self) -> Result<(Vec<Expr>, usize), PErr> {
        let open = self.expect(Tok::LParen, "'('")?.pos;
        self.enter(open)?;
        let mut args = Vec::new();
        let mut h = 0;
        if *self.peek() != Tok::RParen {
            loop {
                let n = self.expr()?;
                h = h.max(n.h);
                args.push(n.e);
                if *self.peek() != Tok::Comma {
                    break;
                }
                self.bump();
            }
        }
        self.expect(Tok::RParen, "',' or ')' in the arguments")?;
        self.leave();
        Ok((args, h))
    }

    fn call(&mut self, name: &str, pos: usize) -> Result<Node, PErr> {
        self.bump();
        let (func, arity) = match name {
            "contains" => (Func::Contains, 2),
            "starts_with" => (Func::StartsWith, 2),
            "ends_with" => (Func::EndsWith, 2),
            "lower" => (Func::Lower, 1),
            "upper" => (Func::Upper, 1),
            "len" => (Func::Len, 1),
            "abs" => (Func::Abs, 1),
            "exists" => return self.exists(),
            "first" => return self.aggregate(AggOp::First, name),
            "last" => return self.aggregate(AggOp::Last, name),
            "count" => return self.aggregate(AggOp::Count, name),
            "sum" => return self.aggregate(AggOp::Sum, name),
            "avg" => return self.aggregate(AggOp::Avg, name),
            "min" => return self.aggregate(AggOp::Min, name),
            "max" => return self.aggregate(AggOp::Max, name),
            _ => {
                return Err(PErr::new(
                    pos,
                    format!("unknown function '{name}' (functions: {FUNCTIONS})"),
                ))
            }
        };
        let (args, h) = self.args()?;
        if args.len() != arity {
            let plural = if arity == 1 { "" } else { "s" };
            return Err(PErr::new(
                pos,
                format!(
                    "{name}() takes {arity} argument{plural} but {} were given",
                    args.len()
                ),
            ));
        }
        self.node(Expr::Call(func, args.into()), h, pos)
    }

    fn exists(&mut self) -> Result<Node, PErr> {
        self.expect(Tok::LParen, "'('")?;
        if !matches!(self.peek(), Tok::Ident(_)) {
            return Err(PErr::new(
                self.pos(),
                format!(
                    "exists() takes a field path, as in exists(user.id), found {}",
                    self.found()
                ),
            ));
        }
        let segs = self.path()?;
        self.expect(Tok::RParen, "')' after the field path of exists()")?;
        Ok(Node {
            e: Expr::Exists(self.schema.intern(segs)),
            h: 1,
        })
    }

    /// `first(stage.path)`, ..., `count(stage)`. A stage may be written as a string literal when
    /// its name is not an identifier: `count('my stage')`, `last('my stage'.price)`.
    fn aggregate(&mut self, op: AggOp, name: &str) -> Result<Node, PErr> {
        self.expect(Tok::LParen, "'('")?;
        let stage_pos = self.pos();
        let stage_name = match self.peek().clone() {
            Tok::Ident(s) | Tok::Str(s) => s,
            _ => {
                let form = if op == AggOp::Count {
                    "count(stage)"
                } else {
                    "stage.field, as in last(a.price)"
                };
                return Err(PErr::new(
                    stage_pos,
                    format!("{name}() takes {form}; found {}", self.found()),
                ));
            }
        };
        self.bump();
        let Some(stage) = self.stages.iter().position(|s| *s == stage_name) else {
            let known = if self.stages.is_empty() {
                "the pattern has no stages".to_string()
            } else {
                format!("known stages: {}", self.stages.join(", "))
            };
            return Err(PErr::new(
                stage_pos,
                format!("unknown stage '{stage_name}' in {name}() ({known})"),
            ));
        };
        let slot = if op == AggOp::Count {
            if *self.peek() == Tok::Dot {
                return Err(PErr::new(
                    self.pos(),
                    "count() takes a stage name only, as in count(a)",
                ));
            }
            0
        } else {
            if *self.peek() != Tok::Dot {
                return Err(PErr::new(
                    self.pos(),
                    format!(
                        "{name}() needs a field of the stage, as in {name}({stage_name}.price); found {}",
                        self.found()
                    ),
                ));
            }
            self.bump();
            let first = self.key()?;
            let segs = self.path_rest(vec![first])?;
            self.schema.intern(segs)
        };
        self.expect(Tok::RParen, &format!("')' to close {name}("))?;
        Ok(Node {
            e: Expr::Agg { op, stage, slot },
            h: 1,
        })
    }

    /// A field path: `a.b[0]['c d']` or `field('weird name').x`.
    fn path(&mut self) -> Result<Vec<Seg>, PErr> {
        let pos = self.pos();
        let first = match self.peek().clone() {
            Tok::Ident(name) if name == "field" && *self.peek2() == Tok::LParen => {
                self.bump();
                self.bump();
                let Tok::Str(key) = self.peek().clone() else {
                    return Err(PErr::new(
                        self.pos(),
                        format!(
                            "field() takes a string literal, as in field('my-field'), found {}",
                            self.found()
                        ),
                    ));
                };
                self.bump();
                self.expect(Tok::RParen, "')' after the field name")?;
                Seg::Key(key.into())
            }
            Tok::Ident(name) => {
                self.bump();
                Seg::Key(name.into())
            }
            _ => {
                return Err(PErr::new(
                    pos,
                    format!("expected a field name, found {}", self.found()),
                ))
            }
        };
        self.path_rest(vec![first])
    }

    /// A key after a `.`: any identifier, keywords included (`a.in`, `a.null`).
    fn key(&mut self) -> Result<Seg, PErr> {
        let t = self.tok().clone();
        let word = &self.src[t.pos..t.end];
        let is_word = matches!(
            t.tok,
            Tok::Ident(_) | Tok::True | Tok::False | Tok::Null | Tok::In
        ) || (matches!(t.tok, Tok::And | Tok::Or | Tok::Not)
            && word.bytes().all(|b| b.is_ascii_alphabetic()));
        if !is_word {
            return Err(PErr::new(
                t.pos,
                format!("expected a field name after '.', found {}", self.found()),
            ));
        }
        self.bump();
        Ok(Seg::Key(word.into()))
    }

    fn path_rest(&mut self, mut segs: Vec<Seg>) -> Result<Vec<Seg>, PErr> {
        loop {
            match self.peek() {
                Tok::Dot => {
                    self.bump();
                    segs.push(self.key()?);
                }
                Tok::LBracket => {
                    self.bump();
                    match self.peek().clone() {
                        Tok::Int(i) if i >= 0 => {
                            segs.push(Seg::Index(usize::try_from(i).unwrap_or(usize::MAX)))
                        }
                        Tok::Str(key) => segs.push(Seg::Key(key.into())),
                        _ => {
                            return Err(PErr::new(
                                self.pos(),
                                format!(
                                    "expected an array index (a non-negative integer) or a quoted key in [...], found {}",
                                    self.found()
                                ),
                            ))
                        }
                    }
                    self.bump();
                    self.expect(Tok::RBracket, "']'")?;
                }
                _ => return Ok(segs),
            }
            if segs.len() > MAX_HEIGHT {
                return Err(PErr::new(
                    self.pos(),
                    format!("field path is too long (more than {MAX_HEIGHT} steps)"),
                ));
            }
        }
    }
}

fn const_node(v: Val) -> Node {
    Node {
        e: Expr::Const(v),
        h: 1,
    }
}
