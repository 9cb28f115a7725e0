//! A chat template must not be able to put a `namespace` inside itself.
//!
//! minijinja's namespaces are its only mutable values, and `{% set ns.x = ns %}` (directly, or
//! through an alias, a list, a macro argument or a nested namespace) makes a cycle that every
//! recursive operation (printing, `tojson`, `==`, sorting) follows until the stack overflows: the
//! process aborts, which no error handling can catch, and no fuel or output cap stops it. Real
//! templates only read and write a namespace's attributes, and some hand it to their macros, so
//! that is all this check allows: a name bound by `{% set NAME = namespace(...) %}` may appear only
//! as `NAME.attr` or `NAME[item]`, in that binding, or as an argument to a parameter of the same
//! name of a macro of the template (inside which the parameter is held to the same rules; the
//! macro defined once and its name never rebound); and
//! `namespace` may appear only in such a binding (or, inside a macro with a parameter of that name,
//! as the parameter). Then no expression can yield a namespace except into a same-named parameter,
//! so none can be stored anywhere, and cycles cannot form. Checked against the 70 real templates in
//! kernels-tests/tokenizer.rs.
//!
//! The check reads the template's tags and expressions as minijinja's default syntax does (string
//! literals, comments and `{% raw %}` blocks are skipped exactly where minijinja skips them); it
//! errs on the side of refusing. Method calls on a namespace (`ns.items()` returns a view holding
//! the namespace) are refused too.

/// A token of a tag or expression: an identifier, or one punctuation byte.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Tok<'a> {
    Ident(&'a str),
    Punct(u8),
    /// A string or number literal.
    Literal,
}

type Toks<'a> = [(Tok<'a>, usize)];

/// One `{% %}` (a statement) or `{{ }}` (an expression): its tokens without the whitespace-control
/// marks, each with its line.
struct Tag<'a> {
    statement: bool,
    toks: Vec<(Tok<'a>, usize)>,
}

impl<'a> Tag<'a> {
    /// A statement's keyword (`set`, `macro`, `endmacro`, ...).
    fn keyword(&self) -> Option<&'a str> {
        match self.toks.first() {
            Some((Tok::Ident(k), _)) if self.statement => Some(k),
            _ => None,
        }
    }
}

/// minijinja's `skip_basic_tag`: after `{%` (and, when `marks`, a `-`/`+`), whitespace, `name`,
/// whitespace, an optional `-`/`+`, `%}`; the length of it all.
fn basic_tag(rest: &str, name: &str, marks: bool) -> Option<usize> {
    let mut p = rest;
    if marks {
        p = p.strip_prefix(['-', '+']).unwrap_or(p);
    }
    p = p.trim_start_matches(|c: char| c.is_ascii_whitespace());
    p = p.strip_prefix(name)?;
    p = p.trim_start_matches(|c: char| c.is_ascii_whitespace());
    p = p.strip_prefix(['-', '+']).unwrap_or(p);
    p = p.strip_prefix("%}")?;
    Some(rest.len() - p.len())
}

/// Every `{% %}` and `{{ }}` of `src`.
fn tags(src: &str) -> Vec<Tag<'_>> {
    let b = src.as_bytes();
    let lines = |from: usize, to: usize| b[from..to.min(b.len())].iter().filter(|&&c| c == b'\n').count();
    let (mut i, mut line) = (0, 1);
    let mut out = Vec::new();
    while i + 1 < b.len() {
        let open = &b[i..i + 2];
        if open == b"{#" {
            let end = src[i + 2..].find("#}").map_or(b.len(), |e| i + 2 + e + 2);
            line += lines(i, end);
            i = end;
            continue;
        }
        if open != b"{%" && open != b"{{" {
            line += (b[i] == b'\n') as usize;
            i += 1;
            continue;
        }
        let statement = open == b"{%";
        i += 2;
        if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
            i += 1;
        }
        if statement {
            if let Some(len) = basic_tag(&src[i..], "raw", false) {
                // `{% raw %}`: up to the first `{% endraw %}`, as minijinja's lexer finds it.
                let body = i + len;
                let mut end = b.len();
                let mut at = body;
                while let Some(p) = src[at..].find("{%").map(|p| at + p) {
                    if let Some(l) = basic_tag(&src[p + 2..], "endraw", true) {
                        end = p + 2 + l;
                        break;
                    }
                    at = p + 2;
                }
                line += lines(i, end);
                i = end;
                continue;
            }
        }
        let close: &[u8] = if statement { b"%}" } else { b"}}" };
        let mut toks = Vec::new();
        while i < b.len() && !(b[i..].starts_with(close) && (statement || !in_braces(&toks))) {
            let c = b[i];
            if c == b'\n' {
                line += 1;
                i += 1;
            } else if c.is_ascii_whitespace() {
                i += 1;
            } else if c == b'"' || c == b'\'' {
                i += 1;
                while i < b.len() && b[i] != c {
                    line += (b[i] == b'\n') as usize;
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                toks.push((Tok::Literal, line));
            } else if c.is_ascii_digit() {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.') {
                    i += 1;
                }
                toks.push((Tok::Literal, line));
            } else if c.is_ascii_alphabetic() || c == b'_' {
                let s = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                toks.push((Tok::Ident(&src[s..i]), line));
            } else {
                toks.push((Tok::Punct(c), line));
                i += 1;
            }
        }
        i += 2;
        // A closing whitespace-control mark (`-%}`, `+}}`).
        if matches!(toks.last(), Some((Tok::Punct(b'-' | b'+'), _))) {
            toks.pop();
        }
        out.push(Tag { statement, toks });
    }
    out
}

/// Whether `{` outnumber `}` in `toks` (a dict literal inside `{{ }}` is still open).
fn in_braces(toks: &Toks<'_>) -> bool {
    let open = toks.iter().filter(|t| t.0 == Tok::Punct(b'{')).count();
    let close = toks.iter().filter(|t| t.0 == Tok::Punct(b'}')).count();
    open > close
}

/// The index of the bracket closing the one at `open`, if any.
fn closing(t: &Toks<'_>, open: usize) -> Option<usize> {
    let mut depth = 0usize;
    for (j, x) in t.iter().enumerate().skip(open) {
        match x.0 {
            Tok::Punct(b'(' | b'[' | b'{') => depth += 1,
            Tok::Punct(b')' | b']' | b'}') => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(j);
                }
            }
            _ => {}
        }
    }
    None
}

/// `{% set NAME = namespace(...) %}`, the whole statement: NAME's index.
fn binding(tag: &Tag<'_>) -> Option<usize> {
    let t = &tag.toks;
    match t[..] {
        [(Tok::Ident("set"), _), (Tok::Ident(_), _), (Tok::Punct(b'='), _), (Tok::Ident("namespace"), _), (Tok::Punct(b'('), _), ..]
            if tag.statement && closing(t, 4) == Some(t.len() - 1) =>
        {
            Some(1)
        }
        _ => None,
    }
}

/// `{% macro NAME(PARAMS) %}`: the name and the parameter names (not their default values).
fn macro_def<'a>(tag: &Tag<'a>) -> Option<(&'a str, Vec<(usize, &'a str)>)> {
    let t = &tag.toks;
    let [(Tok::Ident("macro"), _), (Tok::Ident(name), _), (Tok::Punct(b'('), _), ..] = t[..] else {
        return None;
    };
    if !tag.statement {
        return None;
    }
    let mut params = Vec::new();
    let mut depth = 0usize;
    for k in 2..t.len() {
        match t[k].0 {
            Tok::Punct(b'(' | b'[' | b'{') => depth += 1,
            Tok::Punct(b')' | b']' | b'}') => depth = depth.saturating_sub(1),
            Tok::Ident(p) if depth == 1 && matches!(t[k - 1].0, Tok::Punct(b'(' | b',')) => params.push((k, p)),
            _ => {}
        }
    }
    Some((name, params))
}

#[derive(Clone, Copy)]
enum Slot<'a> {
    Position(usize),
    Keyword(&'a str),
}

/// For the argument at `k` of a call: the callee's name and the argument's slot, when `k` is a
/// whole positional argument (`f(a, X)`) or the value of a keyword argument (`f(X=X)`) of a plain
/// call (not a filter, a test, a method, nor a call with `*args` / `**kwargs`).
fn call_slot<'a>(t: &Toks<'a>, k: usize) -> Option<(&'a str, Slot<'a>)> {
    let at = |i: Option<usize>| i.and_then(|i| t.get(i)).map(|x| x.0);
    let keyword = match (at(k.checked_sub(1)), at(k.checked_sub(2))) {
        (Some(Tok::Punct(b'=')), Some(Tok::Ident(kw))) => Some(kw),
        (Some(Tok::Punct(b'(' | b',')), _) => None,
        _ => return None,
    };
    if !matches!(at(Some(k + 1)), Some(Tok::Punct(b',' | b')'))) {
        return None;
    }
    let start = if keyword.is_some() { k - 2 } else { k };
    if keyword.is_some() && !matches!(at(start.checked_sub(1)), Some(Tok::Punct(b'(' | b','))) {
        return None;
    }
    // Back to the `(` that opens this argument list, counting the arguments before this one.
    let (mut depth, mut commas) = (0usize, 0usize);
    for j in (0..start).rev() {
        match t[j].0 {
            Tok::Punct(b')' | b']' | b'}') => depth += 1,
            Tok::Punct(b'(' | b'[' | b'{') if depth > 0 => depth -= 1,
            Tok::Punct(b'(') => {
                let Some(Tok::Ident(callee)) = at(j.checked_sub(1)) else {
                    return None;
                };
                let before = at(j.checked_sub(2));
                let plain = !matches!(
                    before,
                    Some(Tok::Punct(b'.' | b'|')) | Some(Tok::Ident("is" | "not" | "filter"))
                );
                let end = closing(t, j)?;
                let spread = (j + 1..end)
                    .any(|x| t[x].0 == Tok::Punct(b'*') && matches!(t[x - 1].0, Tok::Punct(b'(' | b',' | b'*')));
                return (plain && !spread).then(|| (callee, keyword.map_or(Slot::Position(commas), Slot::Keyword)));
            }
            Tok::Punct(b'[' | b'{') => return None,
            Tok::Punct(b',') if depth == 0 => commas += 1,
            _ => {}
        }
    }
    None
}

/// The most tokens one tag may have, and the most `elif`s a template may have (real templates:
/// a few hundred tokens, a few dozen `elif`s at most).
const MAX_TAG_TOKENS: usize = 20_000;
const MAX_ELIFS: usize = 5_000;

/// Names that are not the template's macros at a call, whatever the template defines: a call
/// block's `caller`, a loop's `loop`, a macro's `varargs` and `kwargs`, `self` and `super`.
const SPECIAL: [&str; 6] = ["caller", "loop", "varargs", "kwargs", "self", "super"];

/// Statements that open and close a block.
fn depth_change(tag: &Tag<'_>) -> isize {
    match tag.keyword() {
        Some("if" | "for" | "macro" | "call" | "filter" | "with" | "block" | "autoescape") => 1,
        Some("set") if !tag.toks.iter().any(|x| x.0 == Tok::Punct(b'=')) => 1, // `{% set x %}...{% endset %}`
        Some(k) if k.starts_with("end") => -1,
        _ => 0,
    }
}

/// `Err(why)` when `template` could put a namespace inside a namespace (see the module docs).
pub(super) fn check(template: &str) -> std::result::Result<(), String> {
    let tags = tags(template);
    // minijinja parses an operator chain (`1+1+...`) and an `elif` chain by recursion: bounded here
    // far below what overflows the render thread's stack (tokenizer.rs, TEMPLATE_STACK).
    if let Some(big) = tags.iter().find(|t| t.toks.len() > MAX_TAG_TOKENS) {
        let line = big.toks.first().map_or(0, |x| x.1);
        return Err(format!("has a tag of more than {MAX_TAG_TOKENS} tokens (line {line})"));
    }
    if tags.iter().filter(|t| t.keyword() == Some("elif")).count() > MAX_ELIFS {
        return Err(format!("has more than {MAX_ELIFS} elif branches"));
    }
    // Pass 1: the names bound by `{% set NAME = namespace(...) %}`, and the template's macros.
    let names: std::collections::HashSet<&str> = tags
        .iter()
        .filter_map(|t| {
            binding(t).and_then(|at| match t.toks[at].0 {
                Tok::Ident(n) => Some(n),
                _ => None,
            })
        })
        .collect();
    // Macros a namespace may be handed to: defined once, at the top level (so the definition has
    // run by the time anything after it calls the name), never a special name, and their name
    // only ever called (`{% set m = other %}`, a loop variable or a parameter of that name could
    // make `m(ns)` call something else).
    let mut macros: std::collections::HashMap<&str, (usize, Vec<&str>)> = std::collections::HashMap::new();
    let mut ineligible: std::collections::HashSet<&str> = SPECIAL.into_iter().collect();
    let mut depth = 0isize;
    for (i, t) in tags.iter().enumerate() {
        if let Some((name, params)) = macro_def(t) {
            if depth != 0
                || macros
                    .insert(name, (i, params.into_iter().map(|p| p.1).collect()))
                    .is_some()
            {
                ineligible.insert(name);
            }
        }
        depth += depth_change(t);
    }
    for t in &tags {
        let def_at = macro_def(t).map(|_| 1);
        for (k, &(tok, _)) in t.toks.iter().enumerate() {
            let Tok::Ident(id) = tok else { continue };
            let called = t.toks.get(k + 1).map(|x| x.0) == Some(Tok::Punct(b'('));
            let attribute = k.checked_sub(1).map(|p| t.toks[p].0) == Some(Tok::Punct(b'.'));
            if macros.contains_key(id) && def_at != Some(k) && !called && !attribute {
                ineligible.insert(id);
            }
        }
    }
    macros.retain(|name, _| !ineligible.contains(name));
    // A namespace may be handed to a macro, but only to a parameter of the same name, by a call
    // after the macro's definition: inside, that name is checked like the namespace itself.
    let same_name_param = |tag: usize, t: &Toks<'_>, k: usize, id: &str| {
        call_slot(t, k).is_some_and(|(callee, slot)| {
            macros.get(callee).is_some_and(|(def, params)| {
                *def < tag
                    && match slot {
                        Slot::Position(i) => params.get(i) == Some(&id),
                        Slot::Keyword(kw) => kw == id && params.contains(&id),
                    }
            })
        })
    };
    // Pass 2: every other use of those names and of `namespace`. Inside a macro with a parameter
    // named `namespace` (a string in some real templates), that name is the parameter.
    let mut shadowed: Option<usize> = None; // macro depth at which `namespace` became a parameter
    let mut macro_depth = 0usize;
    for (i, tag) in tags.iter().enumerate() {
        let t = &tag.toks;
        let bound = binding(tag);
        let def = macro_def(tag);
        match tag.keyword() {
            Some("macro") => macro_depth += 1,
            Some("endmacro") => {
                if shadowed == Some(macro_depth) {
                    shadowed = None;
                }
                macro_depth = macro_depth.saturating_sub(1);
            }
            _ => {}
        }
        let param_at = |k: usize| def.as_ref().is_some_and(|(_, ps)| ps.iter().any(|p| p.0 == k));
        for (k, &(tok, line)) in t.iter().enumerate() {
            let Tok::Ident(id) = tok else { continue };
            let prev = k.checked_sub(1).map(|p| t[p].0);
            let next = t.get(k + 1).map(|x| x.0);
            let after = t.get(k + 2).map(|x| x.0);
            if prev == Some(Tok::Punct(b'.')) || param_at(k) {
                continue; // an attribute name (`x.ns`), or a macro's parameter
            }
            if next == Some(Tok::Punct(b'=')) && after != Some(Tok::Punct(b'=')) && bound != Some(k) {
                if names.contains(id) && prev != Some(Tok::Punct(b'(')) && prev != Some(Tok::Punct(b',')) {
                    return Err(format!(
                        "rebinds the namespace {id} (line {line}); only its attributes may be set"
                    ));
                }
                continue; // a keyword argument or another assignment target
            }
            if id == "namespace" && (shadowed.is_some() || bound.is_some_and(|b| k == b + 2)) {
                continue;
            }
            if id == "namespace" {
                return Err(format!(
                    "uses namespace (line {line}) other than as `{{% set name = namespace(...) %}}`"
                ));
            }
            if !names.contains(id) || bound == Some(k) {
                continue;
            }
            // `NAME.attr` or `NAME[item]`, but not a method call on the namespace.
            let member_end = match next {
                Some(Tok::Punct(b'.')) => Some(k + 2),
                Some(Tok::Punct(b'[')) => closing(t, k + 1),
                _ => None,
            };
            if let Some(end) = member_end {
                if t.get(end + 1).map(|x| x.0) == Some(Tok::Punct(b'(')) {
                    return Err(format!(
                        "calls a method of the namespace {id} (line {line}); only its attributes may be used"
                    ));
                }
                continue;
            }
            if def.is_none() && same_name_param(i, t, k, id) {
                continue;
            }
            return Err(format!(
                "uses the namespace {id} as a value (line {line}); only its attributes ({id}.x) may be used, \
                 or it may be passed to a macro parameter of the same name, since a namespace stored in a \
                 namespace makes a cycle that crashes the renderer"
            ));
        }
        // After the definition's own tokens: a parameter's default value is outside the macro.
        if shadowed.is_none()
            && def
                .as_ref()
                .is_some_and(|(_, ps)| ps.iter().any(|p| p.1 == "namespace"))
        {
            shadowed = Some(macro_depth);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn real_uses_pass_and_cycles_are_refused() {
        for ok in [
            "{% set ns = namespace(found=false, n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}\
             {% if m.role == 'tool' %}{% set ns.found = true %}{% endif %}{% endfor %}{{ ns.n }}{{ ns['found'] }}",
            "{%- set ns = namespace(a=[]) -%}{{ {'k': ns.a} | tojson }}{# {{ ns }} #}{% raw %}{{ ns }}{% endraw %}",
            "{{ 'ns' ~ \"namespace(\" }}{{ x.namespace }}{{ f(ns=1) }}",
            "{% set ns = namespace() %}{% set ns.x = messages|length %}{{ ns.x == 2 }}",
            // Kimi-K3: a namespace handed down to macros, under its own name.
            "{%- macro next(state) -%}{%- set state.i = state.i + 1 -%}{%- endmacro -%}\
             {%- macro text(t, state, tail=none) -%}{{ t }}{{ next(state) }}{%- endmacro -%}\
             {%- set state = namespace(i=0) -%}{{ text('a', state) }}{{ text(t='b', state=state) }}{{ state.i }}",
            // functionary v3.2: a macro parameter (a string) called `namespace`.
            "{%- macro schema(fns, namespace='functions') -%}{{ 'namespace ' + namespace }}{%- endmacro -%}\
             {{ schema([]) }}{% set ns = namespace(a=1) %}{{ ns.a }}",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        for bad in [
            "{% set ns = namespace() %}{% set ns.n = ns %}{{ ns }}",
            "{% set ns = namespace() %}{% set a = [ns] %}",
            "{% set ns = namespace() %}{{ ns }}",
            "{% set ns = namespace() %}{{ ns|tojson }}",
            "{% set ns = namespace() %}{% set other = namespace(x=ns) %}",
            "{% set ns = namespace() %}{% set ns.x = namespace() %}",
            "{% set f = namespace %}",
            "{% set ns = namespace() %}{% macro m(x) %}{% endmacro %}{{ m(ns) }}",
            "{% set ns = namespace() %}{% for ns in messages %}{% endfor %}",
            "{% set ns = namespace() %}{% set ns = 1 %}",
            "{{ namespace() }}",
            "{% set a, b = namespace(), 1 %}",
            // Handed to a parameter of another name, or as a default value, or twice.
            "{% set ns = namespace() %}{% macro m(x) %}{% set x.y = x %}{% endmacro %}{{ m(x=ns) }}",
            "{% set ns = namespace() %}{% macro m(x=ns) %}{% endmacro %}",
            "{% set ns = namespace() %}{% macro m(ns, x) %}{% set ns.y = x %}{% endmacro %}{{ m(ns, ns) }}",
            "{% set ns = namespace() %}{{ range(ns) }}{{ x.m(ns) }}",
            // Inside its parameter's macro, `namespace` is the parameter; outside, the function.
            "{% macro m(namespace) %}{{ namespace }}{% endmacro %}{% set f = namespace %}",
            "{% macro m(namespace=namespace) %}{% set f = namespace %}{% set g = f() %}{% set g.x = g %}{% endmacro %}",
            // The macro called may not be the one whose parameter has the namespace's name.
            "{% set ns = namespace() %}{% macro m(x) %}{% set x.y = x %}{% endmacro %}{{ m(ns) }}\
             {% macro m(ns) %}{% endmacro %}",
            "{% set ns = namespace() %}{% macro a(x) %}{% set x.y = x %}{% endmacro %}\
             {% macro m(ns) %}{% endmacro %}{% set m = a %}{{ m(ns) }}",
            "{% set ns = namespace() %}{% macro m(ns) %}{% endmacro %}{% for m in [1] %}{{ m(ns) }}{% endfor %}",
            // The parameter keeps the namespace's rules inside the macro.
            "{% set ns = namespace() %}{% macro m(ns) %}{% set ns.y = ns %}{% endmacro %}{{ m(ns) }}",
            // What a red-team review found past the first version of these rules:
            // a tuple whose first item is the namespace;
            "{% set ns = namespace(), 1 %}{% set x = ns[0] %}{% set x.y = x %}{{ x }}",
            // inside a macro called from a call block, `caller` is the block;
            "{% set ns = namespace() %}{% macro caller(ns) %}{% endmacro %}{% macro m(ns) %}{{ caller(ns) }}\
             {% endmacro %}{% call(x) m(ns) %}{% set x.y = x %}{{ x }}{% endcall %}",
            // `endraw` as text inside a raw block, and `raw` as a variable;
            "{% set ns = namespace() %}{% raw %}endraw%}{#{% endraw %}{% set ns.x = ns %}{{ ns }}{# #}",
            "{% set ns = namespace() %}{{ raw }}{% set ns.x = ns %}{{ ns }}{# endraw %} #}",
            // `{{ macro }}` is no macro statement;
            "{% macro m(namespace) %}{{ macro }}{% endmacro %}{% set l = [namespace()] %}{% set g = l[0] %}\
             {% set g.x = g %}{{ g }}",
            // a filter, or a filter block, named like a macro;
            "{% set ns = namespace() %}{% macro default(ns) %}{% endmacro %}{% set x = nothing|default(ns) %}\
             {% set x.y = x %}{{ x }}",
            "{% set ns = namespace() %}{% macro f(ns) %}{% endmacro %}{% filter f(ns) %}{% endfilter %}",
            // `*args` shifts the positions;
            "{% set ns = namespace() %}{% macro m(q, ns) %}{% set q.y = q %}{{ q }}{% endmacro %}{{ m(*[], ns) }}",
            // methods whose results hold the namespace;
            "{% set ns = namespace() %}{% set ns.v = ns.values() %}{{ ns.v }}",
            "{% set ns = namespace(a=1, l=0) %}{% for x in ns.items() %}{% set ns.l = loop %}{% endfor %}",
            "{% set ns = namespace(l={}) %}{{ ns['l'](ns) }}",
            // a call before the definition, or a definition in a block, may reach another callee.
            "{% set ns = namespace() %}{{ m(ns) }}{% macro m(ns) %}{% endmacro %}",
            "{% set ns = namespace() %}{% if x %}{% macro range(ns) %}{% endmacro %}{% endif %}{{ range(ns) }}",
        ] {
            assert!(check(bad).is_err(), "{bad}");
        }
    }
}
