//! Every composed shader variant against naga's reflection of it: the declarations Rust generates
//! and the body that uses them must agree on names, types, struct offsets and sizes, bindings and
//! access modes, constants and overrides, and every binding a family declares must be used by some
//! entry point of one of its variants. No GPU needed.

use crate::gpu::shader::{struct_layout, BindKind, Compose, Value};
use naga::valid::{Capabilities, ValidationFlags, Validator};
use naga::{AddressSpace, ArraySize, Literal, Module, ScalarKind, StorageAccess, TypeInner};

fn scalar_name(s: naga::Scalar) -> String {
    match (s.kind, s.width) {
        (ScalarKind::Uint, 4) => "u32".into(),
        (ScalarKind::Sint, 4) => "i32".into(),
        (ScalarKind::Float, 4) => "f32".into(),
        (ScalarKind::Float, 2) => "f16".into(),
        (ScalarKind::Bool, _) => "bool".into(),
        (k, w) => format!("{k:?}{w}"),
    }
}

/// A naga type spelled as WGSL spells it.
fn type_name(m: &Module, ty: naga::Handle<naga::Type>) -> String {
    let t = &m.types[ty];
    if let Some(name) = &t.name {
        if matches!(t.inner, TypeInner::Struct { .. }) {
            return name.clone();
        }
    }
    match &t.inner {
        TypeInner::Scalar(s) => scalar_name(*s),
        TypeInner::Vector { size, scalar } => format!("vec{}<{}>", *size as u32, scalar_name(*scalar)),
        TypeInner::Atomic(s) => format!("atomic<{}>", scalar_name(*s)),
        TypeInner::Array { base, size, .. } => match size {
            ArraySize::Dynamic => format!("array<{}>", type_name(m, *base)),
            ArraySize::Constant(n) => format!("array<{}, {n}>", type_name(m, *base)),
            ArraySize::Pending(_) => format!("array<{}, override>", type_name(m, *base)),
        },
        other => format!("{other:?}"),
    }
}

fn literal(m: &Module, e: naga::Handle<naga::Expression>) -> Option<Value> {
    match m.global_expressions[e] {
        naga::Expression::Literal(Literal::U32(v)) => Some(Value::u32(v)),
        naga::Expression::Literal(Literal::I32(v)) => Some(Value::i32(v)),
        naga::Expression::Literal(Literal::F32(v)) => Some(Value::f32(v)),
        naga::Expression::Literal(Literal::Bool(v)) => Some(Value::bool(v)),
        _ => None,
    }
}

/// Checks one variant; returns the bindings its entry points use.
fn check(c: &Compose<'_>, subgroups: bool) -> Vec<&'static str> {
    let shader = c.build(subgroups);
    let what = format!(
        "{}[{}]{}",
        c.family(),
        c.variant,
        if subgroups { "" } else { " without subgroups" }
    );
    let src = &shader.source;
    let module = naga::front::wgsl::parse_str(src).unwrap_or_else(|e| panic!("{what}: {}", e.emit_to_string(src)));
    let caps = if subgroups {
        Capabilities::all()
    } else {
        Capabilities::all() - Capabilities::SUBGROUP - Capabilities::SUBGROUP_BARRIER
    };
    let info = Validator::new(ValidationFlags::all(), caps)
        .validate(&module)
        .unwrap_or_else(|e| panic!("{what}: {}", e.emit_to_string(src)));
    let m = &module;
    let itf = c.interface;
    let mut used = Vec::new();

    for st in itf.structs {
        let (_, ty) = m
            .types
            .iter()
            .find(|(_, t)| t.name.as_deref() == Some(st.name))
            .unwrap_or_else(|| panic!("{what}: no struct {}", st.name));
        let TypeInner::Struct { members, span } = &ty.inner else {
            panic!("{what}: {} is not a struct", st.name)
        };
        let layout = struct_layout(st.members);
        assert_eq!(*span, layout.size, "{what}: size of {}", st.name);
        assert_eq!(members.len(), st.members.len(), "{what}: members of {}", st.name);
        for ((nm, decl), off) in members.iter().zip(st.members).zip(&layout.offsets) {
            assert_eq!(nm.name.as_deref(), Some(decl.name), "{what}: {}", st.name);
            assert_eq!(nm.offset, *off, "{what}: offset of {}.{}", st.name, decl.name);
            assert_eq!(
                type_name(m, nm.ty),
                decl.ty.wgsl(),
                "{what}: type of {}.{}",
                st.name,
                decl.name
            );
        }
    }

    for b in itf.bindings {
        let (handle, g) = m
            .global_variables
            .iter()
            .find(|(_, g)| g.name.as_deref() == Some(b.slot.name))
            .unwrap_or_else(|| panic!("{what}: no binding {}", b.slot.name));
        let rb = g
            .binding
            .as_ref()
            .unwrap_or_else(|| panic!("{what}: {} has no binding", b.slot.name));
        assert_eq!((rb.group, rb.binding), (0, b.slot.index), "{what}: {}", b.slot.name);
        match b.kind {
            BindKind::Uniform(st) => {
                assert_eq!(g.space, AddressSpace::Uniform, "{what}: {}", b.slot.name);
                assert_eq!(type_name(m, g.ty), st, "{what}: {}", b.slot.name);
            }
            BindKind::Storage { read_only, ty } => {
                let AddressSpace::Storage { access } = g.space else {
                    panic!("{what}: {} is not in storage", b.slot.name)
                };
                assert_eq!(
                    access.contains(StorageAccess::STORE),
                    !read_only,
                    "{what}: access of {}",
                    b.slot.name
                );
                assert_eq!(
                    type_name(m, g.ty),
                    ty.replace(' ', ""),
                    "{what}: type of {}",
                    b.slot.name
                );
            }
        }
        if (0..m.entry_points.len()).any(|i| !info.get_entry_point(i)[handle].is_empty()) {
            used.push(b.slot.name);
        }
    }
    // Every binding of the module is a declared one: bodies declare none of their own.
    let bound = m.global_variables.iter().filter(|(_, g)| g.binding.is_some()).count();
    assert_eq!(
        bound,
        itf.bindings.len(),
        "{what}: bindings declared outside the interface"
    );

    for o in itf.overrides {
        let (_, ov) = m
            .overrides
            .iter()
            .find(|(_, ov)| ov.name.as_deref() == Some(o.name))
            .unwrap_or_else(|| panic!("{what}: no override {}", o.name));
        assert_eq!(type_name(m, ov.ty), o.value.type_name(), "{what}: type of {}", o.name);
        assert_eq!(
            ov.init.and_then(|e| literal(m, e)),
            Some(o.value),
            "{what}: default of {}",
            o.name
        );
    }
    for k in itf.consts.iter().chain(&c.consts) {
        let (_, ct) = m
            .constants
            .iter()
            .find(|(_, ct)| ct.name.as_deref() == Some(k.name))
            .unwrap_or_else(|| panic!("{what}: no const {}", k.name));
        assert_eq!(type_name(m, ct.ty), k.value.type_name(), "{what}: type of {}", k.name);
        assert_eq!(literal(m, ct.init), Some(k.value), "{what}: value of {}", k.name);
    }
    used
}

/// Every variant, with subgroups and (except the cooperative-matrix kernels, which need them)
/// without: what any device compiles.
#[test]
fn every_variant_matches_its_declaration() {
    let mut used: std::collections::HashMap<&str, Vec<&str>> = Default::default();
    let variants = super::all_variants();
    for c in &variants {
        let u = used.entry(c.family()).or_default();
        u.extend(check(c, true));
        if c.coop_side.is_none() {
            check(c, false);
        }
    }
    for c in &variants {
        for b in c.interface.bindings {
            assert!(
                used[c.family()].contains(&b.slot.name),
                "{}: binding {} is declared but no entry point of any variant uses it",
                c.family(),
                b.slot.name
            );
        }
    }
}

/// No shader body writes a `_pad` member or a binding of its own: the layout comes from code.
#[test]
fn no_hand_written_padding() {
    for c in super::all_variants() {
        for part in &c.parts {
            assert!(!part.contains("_pad"), "{}: hand-written padding", c.family());
            assert!(
                !part.contains("@binding"),
                "{}: a binding outside the interface",
                c.family()
            );
        }
    }
}
