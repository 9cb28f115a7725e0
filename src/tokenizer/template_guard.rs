//! A chat template must not be able to put a `namespace` inside itself.
//!
//! minijinja's namespaces are its only mutable values, and `{% set ns.x = ns %}` (directly, or
//! through an alias, a list, a macro argument or a nested namespace) makes a cycle that every
//! recursive operation (printing, `tojson`, `==`, sorting) follows until the stack overflows: the
//! process aborts, which no error handling can catch, and no fuel or output cap stops it. Real
//! templates only ever read and write a namespace's attributes, so that is all this check allows:
//! a name bound by `{% set NAME = namespace(...) %}` may appear only as `NAME.attr` or
//! `NAME[item]` (or in that binding), and `namespace` may appear only in such a binding. Then no
//! expression can yield a namespace, so none can be stored anywhere, and cycles cannot form.
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

/// `Err(why)` when `template` could put a namespace inside a namespace (see the module docs).
pub(super) fn check(template: &str) -> std::result::Result<(), String> {
    let tags = tags(template);
    // Pass 1: the names bound by `{% set NAME = namespace(...) %}`, and where.
    let binding = |t: &[(Tok<'_>, usize)]| -> Option<usize> {
        let start = t.iter().position(|x| !matches!(x.0, Tok::Punct(b'-' | b'+')))?;
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
    // Pass 2: every other use of those names and of `namespace`.
    for t in &tags {
        let bound = binding(t);
        for (k, &(tok, line)) in t.iter().enumerate() {
            let Tok::Ident(id) = tok else { continue };
            let prev = k.checked_sub(1).map(|p| t[p].0);
            let next = t.get(k + 1).map(|x| x.0);
            let after = t.get(k + 2).map(|x| x.0);
            if prev == Some(Tok::Punct(b'.')) {
                continue; // an attribute name: `x.ns`
            }
            if next == Some(Tok::Punct(b'=')) && after != Some(Tok::Punct(b'=')) && bound != Some(k) {
                if names.contains(id) && prev != Some(Tok::Punct(b'(')) && prev != Some(Tok::Punct(b',')) {
                    return Err(format!(
                        "rebinds the namespace {id} (line {line}); only its attributes may be set"
                    ));
                }
                continue; // a keyword argument or another assignment target
            }
            if id == "namespace" && bound.is_some_and(|b| k == b + 2) {
                continue;
            }
            if id == "namespace" {
                return Err(format!(
                    "uses namespace (line {line}) other than as `{{% set name = namespace(...) %}}`"
                ));
            }
            if names.contains(id) && bound != Some(k) && !matches!(next, Some(Tok::Punct(b'.' | b'['))) {
                return Err(format!(
                    "uses the namespace {id} as a value (line {line}); only its attributes ({id}.x) may be used, \
                     since a namespace stored in a namespace makes a cycle that crashes the renderer"
                ));
            }
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
        ] {
            assert!(check(bad).is_err(), "{bad}");
        }
    }
}
