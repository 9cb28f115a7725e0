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
//! The check reads the template's tags and expressions with minijinja's default syntax (string
//! literals, comments and `{% raw %}` blocks are skipped); it errs on the side of refusing.

/// A token of a tag or expression: an identifier, or one punctuation byte.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Tok<'a> {
    Ident(&'a str),
    Punct(u8),
    /// A string or number literal.
    Literal,
}

/// The tokens of every `{% %}` and `{{ }}` of `src`, each with its line, one `Vec` per tag.
fn tags(src: &str) -> Vec<Vec<(Tok<'_>, usize)>> {
    let b = src.as_bytes();
    let (mut i, mut line) = (0, 1);
    let mut out = Vec::new();
    while i + 1 < b.len() {
        let open = &b[i..i + 2];
        if open == b"{#" {
            let end = src[i + 2..].find("#}").map_or(b.len(), |e| i + 2 + e + 2);
            line += b[i..end].iter().filter(|&&c| c == b'\n').count();
            i = end;
            continue;
        }
        if open != b"{%" && open != b"{{" {
            line += (b[i] == b'\n') as usize;
            i += 1;
            continue;
        }
        let close: &[u8] = if open == b"{%" { b"%}" } else { b"}}" };
        i += 2;
        let mut toks = Vec::new();
        while i < b.len() && !(b[i..].starts_with(close) && (close != b"}}" || !in_braces(&toks))) {
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
        // `{% raw %}`: skip to `{% endraw %}`.
        if matches!(
            toks.iter()
                .map(|t| t.0)
                .find(|t| *t != Tok::Punct(b'-') && *t != Tok::Punct(b'+')),
            Some(Tok::Ident("raw"))
        ) {
            let end = src.get(i..).and_then(|r| r.find("endraw")).map_or(b.len(), |e| i + e);
            line += b[i.min(end)..end].iter().filter(|&&c| c == b'\n').count();
            i = src[end..].find("%}").map_or(b.len(), |e| end + e + 2);
        }
        out.push(toks);
    }
    out
}

/// Whether `{` outnumber `}` in `toks` (a dict literal inside `{{ }}` is still open).
fn in_braces(toks: &[(Tok<'_>, usize)]) -> bool {
    let open = toks.iter().filter(|t| t.0 == Tok::Punct(b'{')).count();
    let close = toks.iter().filter(|t| t.0 == Tok::Punct(b'}')).count();
    open > close
}

/// The first token of a tag after its whitespace-control mark (`{%-`, `{%+`).
fn first(t: &[(Tok<'_>, usize)]) -> usize {
    t.iter().position(|x| !matches!(x.0, Tok::Punct(b'-' | b'+'))).unwrap_or(t.len())
}

/// `{% macro NAME(PARAMS) %}`: the name and the parameter names (not their default values).
fn macro_def<'a>(t: &[(Tok<'a>, usize)]) -> Option<(&'a str, Vec<(usize, &'a str)>)> {
    let s = first(t);
    let [(Tok::Ident("macro"), _), (Tok::Ident(name), _), (Tok::Punct(b'('), _), ..] = t[s..] else {
        return None;
    };
    let mut params = Vec::new();
    let mut depth = 0usize;
    for k in s + 2..t.len() {
        match t[k].0 {
            Tok::Punct(b'(' | b'[' | b'{') => depth += 1,
            Tok::Punct(b')' | b']' | b'}') => depth = depth.saturating_sub(1),
            Tok::Ident(p) if depth == 1 && matches!(t[k - 1].0, Tok::Punct(b'(' | b',')) => params.push((k, p)),
            _ => {}
        }
    }
    Some((name, params))
}

/// For the argument at `k` of a call: the callee's name and the argument's position, when `k` is a
/// whole positional argument (`f(a, X)`) or the value of a keyword argument (`f(X=X)`).
fn call_slot<'a>(t: &[(Tok<'a>, usize)], k: usize) -> Option<(&'a str, Slot<'a>)> {
    let keyword = match (k.checked_sub(1).map(|p| t[p].0), k.checked_sub(2).map(|p| t[p].0)) {
        (Some(Tok::Punct(b'=')), Some(Tok::Ident(kw))) => Some(kw),
        (Some(Tok::Punct(b'(' | b',')), _) => None,
        _ => return None,
    };
    if !matches!(t.get(k + 1).map(|x| x.0), Some(Tok::Punct(b',' | b')'))) {
        return None;
    }
    let start = if keyword.is_some() { k - 2 } else { k };
    if keyword.is_some() && !matches!(start.checked_sub(1).map(|p| t[p].0), Some(Tok::Punct(b'(' | b','))) {
        return None;
    }
    // Back to the `(` that opens this argument list, counting the arguments before this one.
    let (mut depth, mut commas) = (0usize, 0usize);
    for j in (0..start).rev() {
        match t[j].0 {
            Tok::Punct(b')' | b']' | b'}') => depth += 1,
            Tok::Punct(b'(' | b'[' | b'{') if depth > 0 => depth -= 1,
            Tok::Punct(b'(') => {
                let callee = match (j.checked_sub(1).map(|p| t[p].0), j.checked_sub(2).map(|p| t[p].0)) {
                    (Some(Tok::Ident(f)), prev) if prev != Some(Tok::Punct(b'.')) => f,
                    _ => return None,
                };
                return Some((callee, keyword.map_or(Slot::Position(commas), Slot::Keyword)));
            }
            Tok::Punct(b'[' | b'{') => return None,
            Tok::Punct(b',') if depth == 0 => commas += 1,
            _ => {}
        }
    }
    None
}

#[derive(Clone, Copy)]
enum Slot<'a> {
    Position(usize),
    Keyword(&'a str),
}

/// `Err(why)` when `template` could put a namespace inside a namespace (see the module docs).
pub(super) fn check(template: &str) -> std::result::Result<(), String> {
    let tags = tags(template);
    // Pass 1: the names bound by `{% set NAME = namespace(...) %}`, and the template's macros.
    let binding = |t: &[(Tok<'_>, usize)]| -> Option<usize> {
        let start = first(t);
        match t[start..] {
            [(Tok::Ident("set"), _), (Tok::Ident(_), _), (Tok::Punct(b'='), _), (Tok::Ident("namespace"), _), (Tok::Punct(b'('), _), ..] => {
                Some(start + 1)
            }
            _ => None,
        }
    };
    let names: std::collections::HashSet<&str> = tags
        .iter()
        .filter_map(|t| {
            binding(t).and_then(|at| match t[at].0 {
                Tok::Ident(n) => Some(n),
                _ => None,
            })
        })
        .collect();
    // Macros a namespace may be handed to: defined once, and their name only ever called
    // (`{% set m = other %}`, a loop variable or a parameter of that name could make `m(ns)` call
    // another macro, with other parameter names).
    let mut macros: std::collections::HashMap<&str, Vec<&str>> = std::collections::HashMap::new();
    let mut ineligible: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for t in &tags {
        if let Some((name, params)) = macro_def(t) {
            if macros.insert(name, params.into_iter().map(|p| p.1).collect()).is_some() {
                ineligible.insert(name);
            }
        }
    }
    for t in &tags {
        let def_at = macro_def(t).map(|_| first(t) + 1);
        for (k, &(tok, _)) in t.iter().enumerate() {
            let Tok::Ident(id) = tok else { continue };
            let called = t.get(k + 1).map(|x| x.0) == Some(Tok::Punct(b'('));
            let attribute = k.checked_sub(1).map(|p| t[p].0) == Some(Tok::Punct(b'.'));
            if macros.contains_key(id) && def_at != Some(k) && !called && !attribute {
                ineligible.insert(id);
            }
        }
    }
    macros.retain(|name, _| !ineligible.contains(name));
    // A namespace may be handed to a macro, but only to a parameter of the same name: inside, that
    // name is checked like the namespace itself.
    let same_name_param = |t: &[(Tok<'_>, usize)], k: usize, id: &str| {
        call_slot(t, k).is_some_and(|(callee, slot)| {
            macros.get(callee).is_some_and(|params| match slot {
                Slot::Position(i) => params.get(i) == Some(&id),
                Slot::Keyword(kw) => kw == id && params.contains(&id),
            })
        })
    };
    // Pass 2: every other use of those names and of `namespace`. Inside a macro with a parameter
    // named `namespace` (a string in some real templates), that name is the parameter.
    let mut shadowed: Option<usize> = None; // macro depth at which `namespace` became a parameter
    let mut macro_depth = 0usize;
    for t in &tags {
        let bound = binding(t);
        let def = macro_def(t);
        match t.get(first(t)).map(|x| x.0) {
            Some(Tok::Ident("macro")) => macro_depth += 1,
            Some(Tok::Ident("endmacro")) => {
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
            if names.contains(id)
                && bound != Some(k)
                && !matches!(next, Some(Tok::Punct(b'.' | b'[')))
                && !same_name_param(t, k, id)
            {
                return Err(format!(
                    "uses the namespace {id} as a value (line {line}); only its attributes ({id}.x) may be used, \
                     or it may be passed to a macro parameter of the same name, since a namespace stored in a \
                     namespace makes a cycle that crashes the renderer"
                ));
            }
        }
        // After the definition's own tokens: a parameter's default value is outside the macro.
        if shadowed.is_none() && def.as_ref().is_some_and(|(_, ps)| ps.iter().any(|p| p.1 == "namespace")) {
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
        ] {
            assert!(check(bad).is_err(), "{bad}");
        }
    }
}
