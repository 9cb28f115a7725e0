//! Shader sources and the host–shader interface, declared once in Rust.
//!
//! Each kernel family declares its uniform structs ([`wgsl_struct!`](crate::wgsl_struct)), its
//! compile-time constants ([`wgsl_consts!`](crate::wgsl_consts)), its override constants
//! ([`wgsl_overrides!`](crate::wgsl_overrides)) and its bindings with the [`Interface`] they make
//! ([`wgsl_interface!`](crate::wgsl_interface)) in its Rust module. [`Interface::wgsl`] turns that
//! declaration into the WGSL declarations (structs laid out by WGSL's rules, `const`s, `override`s,
//! `@group(0) @binding(n)` lines with their access modes), and [`Compose`] prepends them, with the
//! common prelude, to the family's shader body. Nothing is written twice: binding numbers come from
//! the declaration order, struct offsets from [`struct_layout`], and the host writes uniform values
//! at exactly those offsets ([`HostStruct::to_bytes`]). `kernels::interface_tests` checks every
//! composed variant against naga's own reflection.

use std::hash::{Hash, Hasher};

/// A WGSL scalar or vector type a uniform struct member can have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ty {
    U32,
    I32,
    F32,
    /// `vecN<T>` of a 32-bit scalar (N in 2..=4).
    Vec(u32, Scalar),
}

/// The 32-bit scalars of [`Ty::Vec`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scalar {
    U32,
    I32,
    F32,
}

impl Scalar {
    fn wgsl(self) -> &'static str {
        match self {
            Scalar::U32 => "u32",
            Scalar::I32 => "i32",
            Scalar::F32 => "f32",
        }
    }
}

impl Ty {
    pub fn wgsl(self) -> String {
        match self {
            Ty::U32 => "u32".into(),
            Ty::I32 => "i32".into(),
            Ty::F32 => "f32".into(),
            Ty::Vec(n, s) => format!("vec{n}<{}>", s.wgsl()),
        }
    }

    /// Size and alignment in bytes (WGSL's "alignment and size" table; the same in the uniform
    /// and storage address spaces for scalars and vectors).
    pub fn size_align(self) -> (u32, u32) {
        match self {
            Ty::U32 | Ty::I32 | Ty::F32 => (4, 4),
            Ty::Vec(2, _) => (8, 8),
            Ty::Vec(3, _) => (12, 16),
            Ty::Vec(_, _) => (16, 16),
        }
    }

    /// 32-bit words a value of this type is written as.
    pub fn words(self) -> usize {
        match self {
            Ty::Vec(n, _) => n as usize,
            _ => 1,
        }
    }
}

/// A Rust value type that maps to a WGSL type (struct members).
pub trait WgslType: Copy {
    const TY: Ty;
    /// The value as little-endian 32-bit words (one per scalar component).
    fn push_words(self, out: &mut Vec<u32>);
}

impl WgslType for u32 {
    const TY: Ty = Ty::U32;
    fn push_words(self, out: &mut Vec<u32>) {
        out.push(self);
    }
}
impl WgslType for i32 {
    const TY: Ty = Ty::I32;
    fn push_words(self, out: &mut Vec<u32>) {
        out.push(self as u32);
    }
}
impl WgslType for f32 {
    const TY: Ty = Ty::F32;
    fn push_words(self, out: &mut Vec<u32>) {
        out.push(self.to_bits());
    }
}
macro_rules! vec_types {
    ($($t:ty, $n:literal, $s:ident);*) => {$(
        impl WgslType for [$t; $n] {
            const TY: Ty = Ty::Vec($n, Scalar::$s);
            fn push_words(self, out: &mut Vec<u32>) {
                for v in self {
                    v.push_words(out);
                }
            }
        }
    )*};
}
vec_types!(u32, 2, U32; u32, 4, U32; f32, 2, F32; f32, 4, F32; i32, 2, I32; i32, 4, I32);

/// One member of a uniform struct.
#[derive(Clone, Copy, Debug)]
pub struct Member {
    pub name: &'static str,
    pub ty: Ty,
    /// The Rust doc comment, repeated as a WGSL comment.
    pub doc: &'static str,
}

/// A uniform struct as WGSL sees it.
#[derive(Clone, Copy, Debug)]
pub struct StructDecl {
    pub name: &'static str,
    pub members: &'static [Member],
}

/// Where each member of a struct sits, by WGSL's layout rules: each member at the next offset
/// that is a multiple of its alignment, the struct's size rounded up to its largest alignment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StructLayout {
    pub offsets: Vec<u32>,
    pub size: u32,
    pub align: u32,
}

pub fn struct_layout(members: &[Member]) -> StructLayout {
    let mut offsets = Vec::with_capacity(members.len());
    let (mut at, mut align) = (0u32, 4u32);
    for m in members {
        let (size, a) = m.ty.size_align();
        at = at.next_multiple_of(a);
        offsets.push(at);
        at += size;
        align = align.max(a);
    }
    StructLayout {
        offsets,
        size: at.next_multiple_of(align),
        align,
    }
}

/// A Rust struct declared with [`wgsl_struct!`](crate::wgsl_struct): its WGSL declaration, and its
/// values as the bytes a uniform buffer holds.
pub trait HostStruct: Copy {
    const DECL: StructDecl;
    /// Every member's words, in declaration order.
    fn words(&self) -> Vec<u32>;

    /// The struct's bytes at the offsets [`struct_layout`] gives, padding zeroed.
    fn to_bytes(&self) -> Vec<u8> {
        let layout = struct_layout(Self::DECL.members);
        let words = self.words();
        let mut out = vec![0u8; layout.size as usize];
        let mut w = words.iter();
        for (m, &off) in Self::DECL.members.iter().zip(&layout.offsets) {
            for i in 0..m.ty.words() {
                let v = w
                    .next()
                    .expect("HostStruct::words gave fewer words than its members hold");
                let at = off as usize + 4 * i;
                out[at..at + 4].copy_from_slice(&v.to_le_bytes());
            }
        }
        out
    }
}

/// A `const` or `override` value.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    u32(u32),
    i32(i32),
    f32(f32),
    bool(bool),
}

impl Value {
    pub fn type_name(self) -> &'static str {
        match self {
            Value::u32(_) => "u32",
            Value::i32(_) => "i32",
            Value::f32(_) => "f32",
            Value::bool(_) => "bool",
        }
    }

    /// The value as a WGSL literal.
    pub fn literal(self) -> String {
        match self {
            Value::u32(v) => format!("{v}u"),
            Value::i32(v) => format!("{v}i"),
            Value::f32(v) => {
                let s = format!("{v:?}");
                if s.contains(['.', 'e', 'E']) {
                    format!("{s}f")
                } else {
                    format!("{s}.0f")
                }
            }
            Value::bool(v) => v.to_string(),
        }
    }

    /// What wgpu's pipeline constants take.
    pub fn as_f64(self) -> f64 {
        match self {
            Value::u32(v) => v as f64,
            Value::i32(v) => v as f64,
            Value::f32(v) => v as f64,
            Value::bool(v) => v as u32 as f64,
        }
    }
}

/// Conversion of an override's Rust value into what a pipeline is specialised with.
pub trait OverrideValue: Copy {
    fn value(self) -> Value;
}
impl OverrideValue for u32 {
    fn value(self) -> Value {
        Value::u32(self)
    }
}
impl OverrideValue for i32 {
    fn value(self) -> Value {
        Value::i32(self)
    }
}
impl OverrideValue for f32 {
    fn value(self) -> Value {
        Value::f32(self)
    }
}
impl OverrideValue for bool {
    fn value(self) -> Value {
        Value::bool(self)
    }
}

/// A named `const` or `override` with its (default) value.
#[derive(Clone, Copy, Debug)]
pub struct ConstDecl {
    pub name: &'static str,
    pub value: Value,
    pub doc: &'static str,
}

/// A family's override constants ([`wgsl_overrides!`](crate::wgsl_overrides)): their declarations
/// with defaults, and the values one pipeline is specialised with.
pub trait Overrides: Copy {
    const DECLS: &'static [ConstDecl];
    fn values(&self) -> Vec<(&'static str, Value)>;

    /// As wgpu's `PipelineCompilationOptions::constants` take them.
    fn constants(&self) -> Vec<(&'static str, f64)> {
        self.values().into_iter().map(|(n, v)| (n, v.as_f64())).collect()
    }
}

/// A binding's index in group 0 (its place in the family's [`wgsl_bindings!`](crate::wgsl_bindings)
/// list) and name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub index: u32,
    pub name: &'static str,
}

/// What a binding holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindKind {
    /// `var<uniform>` of the named struct.
    Uniform(&'static str),
    /// `var<storage, read>` (`read_only`) or `var<storage, read_write>` of a WGSL type.
    Storage { read_only: bool, ty: &'static str },
}

#[derive(Clone, Copy, Debug)]
pub struct Binding {
    pub slot: Slot,
    pub kind: BindKind,
    pub doc: &'static str,
}

/// Everything a family's shader body expects to be declared for it.
#[derive(Clone, Copy, Debug)]
pub struct Interface {
    pub family: &'static str,
    pub structs: &'static [StructDecl],
    pub consts: &'static [ConstDecl],
    pub overrides: &'static [ConstDecl],
    pub bindings: &'static [Binding],
}

fn doc_lines(out: &mut String, doc: &str, indent: &str) {
    for line in doc.lines().filter(|l| !l.trim().is_empty()) {
        out.push_str(&format!("{indent}//{line}\n"));
    }
}

impl Interface {
    /// The WGSL declarations of this interface.
    pub fn wgsl(&self) -> String {
        let mut s = format!(
            "// The `{}` family's interface, generated from its Rust declaration (src/kernels/).\n",
            self.family
        );
        for st in self.structs {
            s.push_str(&format!("struct {} {{\n", st.name));
            for m in st.members {
                doc_lines(&mut s, m.doc, "    ");
                s.push_str(&format!("    {}: {},\n", m.name, m.ty.wgsl()));
            }
            s.push_str("}\n");
        }
        for c in self.consts {
            doc_lines(&mut s, c.doc, "");
            s.push_str(&format!(
                "const {}: {} = {};\n",
                c.name,
                c.value.type_name(),
                c.value.literal()
            ));
        }
        for o in self.overrides {
            doc_lines(&mut s, o.doc, "");
            s.push_str(&format!(
                "override {}: {} = {};\n",
                o.name,
                o.value.type_name(),
                o.value.literal()
            ));
        }
        for b in self.bindings {
            doc_lines(&mut s, b.doc, "");
            let decl = match b.kind {
                BindKind::Uniform(st) => format!("var<uniform> {}: {st}", b.slot.name),
                BindKind::Storage { read_only, ty } => format!(
                    "var<storage, {}> {}: {ty}",
                    if read_only { "read" } else { "read_write" },
                    b.slot.name
                ),
            };
            s.push_str(&format!("@group(0) @binding({}) {decl};\n", b.slot.index));
        }
        s
    }
}

/// Declares a uniform struct once: the Rust struct (fields in declaration order, no padding) and
/// its WGSL declaration ([`HostStruct`]). Members are `u32`, `i32`, `f32` or `[T; 2|4]` (vectors).
#[macro_export]
macro_rules! wgsl_struct {
    (
        $(#[doc = $sdoc:literal])*
        $vis:vis struct $name:ident {
            $( $(#[doc = $doc:literal])* $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[doc = $sdoc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq)]
        $vis struct $name {
            $( $(#[doc = $doc])* pub $field: $ty, )*
        }
        impl $crate::internals::gpu::shader::HostStruct for $name {
            const DECL: $crate::internals::gpu::shader::StructDecl = $crate::internals::gpu::shader::StructDecl {
                name: stringify!($name),
                members: &[$(
                    $crate::internals::gpu::shader::Member {
                        name: stringify!($field),
                        ty: <$ty as $crate::internals::gpu::shader::WgslType>::TY,
                        doc: concat!($($doc, "\n",)* ""),
                    },
                )*],
            };
            fn words(&self) -> Vec<u32> {
                let mut out = Vec::new();
                $( $crate::internals::gpu::shader::WgslType::push_words(self.$field, &mut out); )*
                out
            }
        }
    };
}

/// Declares a family's bindings once, in group 0, numbered in order: a module of [`Slot`]s to bind
/// by name from Rust, and `ALL`, the list [`Interface`] turns into WGSL. Each entry is
/// `name: uniform Struct`, `name: read "wgsl type"` or `name: read_write "wgsl type"`.
#[macro_export]
macro_rules! wgsl_bindings {
    (
        $vis:vis mod $m:ident {
            $( $(#[doc = $doc:literal])* $name:ident : $kind:ident $ty:tt ),* $(,)?
        }
    ) => {
        #[allow(non_upper_case_globals, dead_code)]
        $vis mod $m {
            #[allow(non_camel_case_types, clippy::enum_variant_names)]
            #[repr(u32)]
            enum Index { $($name,)* }
            $(
                $(#[doc = $doc])*
                pub const $name: $crate::internals::gpu::shader::Slot =
                    $crate::internals::gpu::shader::Slot { index: Index::$name as u32, name: stringify!($name) };
            )*
            pub const ALL: &[$crate::internals::gpu::shader::Binding] = &[$(
                $crate::internals::gpu::shader::Binding {
                    slot: $name,
                    kind: $crate::wgsl_bindings!(@kind $kind $ty),
                    doc: concat!($($doc, "\n",)* ""),
                },
            )*];
        }
    };
    (@kind uniform $t:ident) => { $crate::internals::gpu::shader::BindKind::Uniform(stringify!($t)) };
    (@kind read $t:literal) => { $crate::internals::gpu::shader::BindKind::Storage { read_only: true, ty: $t } };
    (@kind read_write $t:literal) => { $crate::internals::gpu::shader::BindKind::Storage { read_only: false, ty: $t } };
}

/// Declares a family's interface once: its bindings (a module `bind` of [`Slot`]s, numbered in
/// order, as [`wgsl_bindings!`](crate::wgsl_bindings) takes them) and `INTERFACE`, the
/// [`Interface`] of its uniform structs, constants (optional) and overrides (optional).
#[macro_export]
macro_rules! wgsl_interface {
    (
        family: $family:literal,
        structs: [$($st:ty),* $(,)?],
        $(consts: $consts:expr,)?
        $(overrides: $ov:ty,)?
        bindings: { $($bindings:tt)* } $(,)?
    ) => {
        $crate::wgsl_bindings! { pub(crate) mod bind { $($bindings)* } }
        pub(crate) const INTERFACE: $crate::internals::gpu::shader::Interface = $crate::internals::gpu::shader::Interface {
            family: $family,
            structs: &[$(<$st as $crate::internals::gpu::shader::HostStruct>::DECL),*],
            consts: $crate::wgsl_interface!(@consts $($consts)?),
            overrides: $crate::wgsl_interface!(@overrides $($ov)?),
            bindings: bind::ALL,
        };
    };
    (@consts) => { &[] };
    (@consts $e:expr) => { $e };
    (@overrides) => { &[] };
    (@overrides $t:ty) => { <$t as $crate::internals::gpu::shader::Overrides>::DECLS };
}

/// Declares compile-time constants once: Rust `const`s, and the list (`$list`) that [`Interface`]
/// turns into WGSL `const` declarations. Types: `u32`, `i32`, `f32`, `bool`.
#[macro_export]
macro_rules! wgsl_consts {
    (
        $vis:vis const $list:ident = {
            $( $(#[doc = $doc:literal])* $name:ident : $ty:ident = $v:expr ),* $(,)?
        }
    ) => {
        $( $(#[doc = $doc])* $vis const $name: $ty = $v; )*
        $vis const $list: &[$crate::internals::gpu::shader::ConstDecl] = &[$(
            $crate::internals::gpu::shader::ConstDecl {
                name: stringify!($name),
                value: $crate::internals::gpu::shader::Value::$ty($name),
                doc: concat!($($doc, "\n",)* ""),
            },
        )*];
    };
}

/// Declares a family's override constants once: a Rust struct (one field per override, named as
/// in WGSL, `Default` = the declared defaults) whose values specialise a pipeline
/// ([`Overrides::constants`]), and the WGSL `override` declarations.
#[macro_export]
macro_rules! wgsl_overrides {
    (
        $(#[doc = $sdoc:literal])*
        $vis:vis struct $name:ident {
            $( $(#[doc = $doc:literal])* $field:ident : $ty:ident = $default:expr ),* $(,)?
        }
    ) => {
        $(#[doc = $sdoc])*
        #[allow(non_snake_case)]
        #[derive(Clone, Copy, Debug, PartialEq)]
        $vis struct $name {
            $( $(#[doc = $doc])* pub $field: $ty, )*
        }
        impl Default for $name {
            fn default() -> Self {
                Self { $($field: $default,)* }
            }
        }
        impl $crate::internals::gpu::shader::Overrides for $name {
            const DECLS: &'static [$crate::internals::gpu::shader::ConstDecl] = &[$(
                $crate::internals::gpu::shader::ConstDecl {
                    name: stringify!($field),
                    value: $crate::internals::gpu::shader::Value::$ty($default),
                    doc: concat!($($doc, "\n",)* ""),
                },
            )*];
            fn values(&self) -> Vec<(&'static str, $crate::internals::gpu::shader::Value)> {
                vec![$(
                    (stringify!($field), $crate::internals::gpu::shader::OverrideValue::value(self.$field)),
                )*]
            }
        }
    };
}

/// The prelude every shader gets after its interface: the shared helpers of shaders/common.wgsl,
/// after the constants both sides share ([`prelude_consts`]).
pub const COMMON: &str = include_str!("../../shaders/common.wgsl");

/// Workgroups per grid row: dispatches larger than the per-dimension limit spill into y
/// ([`super::grid`]; shaders recover the flat index with `flat_group`).
pub const GRID_X: u32 = 65535;

/// The constants of the prelude that Rust also uses: the weight precision codes
/// ([`super::DType::code`]) and the grid width.
pub fn prelude_consts() -> String {
    let mut s = format!("const GRID_X: u32 = {GRID_X}u;\n");
    for d in super::DType::ALL {
        s.push_str(&format!(
            "const DT_{}: u32 = {}u;\n",
            d.name().to_ascii_uppercase(),
            d.code()
        ));
    }
    s
}

/// How a family's source is put together for one device and variant.
#[derive(Clone, Debug)]
pub struct Compose<'a> {
    /// Names the variant in pipeline keys and errors (for example `f16/moe_down/coop8`); two
    /// variants of a family may differ in source only through what this names.
    pub variant: String,
    pub interface: &'a Interface,
    /// Body parts, concatenated after the interface and prelude (a weight format's functions, a
    /// mode's hooks, then the kernel body).
    pub parts: Vec<&'a str>,
    /// Constants of this variant alone (tile shapes that depend on the adapter), declared after
    /// the interface's.
    pub consts: Vec<ConstDecl>,
    /// Cooperative-matrix tile side: defines the `CmA` / `CmB` / `CmC` aliases
    /// (`coop_matNxN<..>`), which WGSL cannot parameterise with an override.
    pub coop_side: Option<u32>,
}

/// A composed shader module's source, with the hash that keys its pipelines.
#[derive(Clone, Debug)]
pub struct Shader {
    pub family: &'static str,
    pub variant: String,
    pub source: String,
    pub hash: u64,
}

impl<'a> Compose<'a> {
    /// The family's plain source: its interface, then `parts`.
    pub fn new(interface: &'a Interface, parts: Vec<&'a str>) -> Self {
        Self {
            variant: String::new(),
            interface,
            parts,
            consts: Vec::new(),
            coop_side: None,
        }
    }

    pub fn family(&self) -> &'static str {
        self.interface.family
    }

    /// The module's source for a device with (`subgroups`) or without subgroup operations.
    pub fn build(&self, subgroups: bool) -> Shader {
        let mut body = String::new();
        for part in &self.parts {
            body.push_str(part);
            body.push('\n');
        }
        if !subgroups {
            body = without_subgroups(&body);
        }
        let (enables, body): (Vec<&str>, Vec<&str>) = body.lines().partition(|l| l.trim_start().starts_with("enable "));
        let mut source = String::new();
        let mut seen: Vec<&str> = Vec::new();
        for e in enables.iter().map(|l| l.trim()) {
            if !seen.contains(&e) {
                seen.push(e);
                source.push_str(e);
                source.push('\n');
            }
        }
        source.push_str(&prelude_consts());
        source.push_str(COMMON);
        source.push('\n');
        if let Some(cm) = self.coop_side {
            source.push_str(&coop_aliases(cm));
        }
        source.push_str(&self.interface.wgsl());
        if !self.consts.is_empty() {
            source.push_str(&format!("// The constants of variant `{}`.\n", self.variant));
        }
        for c in &self.consts {
            source.push_str(&format!(
                "const {}: {} = {};\n",
                c.name,
                c.value.type_name(),
                c.value.literal()
            ));
        }
        source.push_str(&body.join("\n"));
        source.push('\n');
        let mut h = std::collections::hash_map::DefaultHasher::new();
        source.hash(&mut h);
        Shader {
            family: self.interface.family,
            variant: self.variant.clone(),
            hash: h.finish(),
            source,
        }
    }
}

/// The cooperative-matrix tile side and types of a variant.
fn coop_aliases(cm: u32) -> String {
    format!(
        "alias CmA = coop_mat{cm}x{cm}<f16, A>;\n\
         alias CmB = coop_mat{cm}x{cm}<f16, B>;\n\
         alias CmC = coop_mat{cm}x{cm}<f32, C>;\n"
    )
}

/// `src` without its subgroup code, for devices without the subgroups feature: wgpu validates a
/// whole module against the device's features, so even an unreachable subgroup call is rejected.
/// Drops the lines from `// subgroups:begin` to `// subgroups:end` and every line ending in
/// `// subgroups-only`; kernels pick subgroup entry points only when `Caps` allows.
pub fn without_subgroups(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut skipping = false;
    for line in src.lines() {
        let t = line.trim();
        if t.starts_with("// subgroups:begin") {
            skipping = true;
        } else if t.starts_with("// subgroups:end") {
            skipping = false;
        } else if !skipping && !t.ends_with("// subgroups-only") {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::wgsl_struct! {
        struct Mixed {
            a: u32,
            b: [f32; 4],
            c: f32,
            d: [u32; 2],
            e: i32,
        }
    }

    #[test]
    fn layout_follows_wgsl_alignment() {
        let l = struct_layout(Mixed::DECL.members);
        assert_eq!(l.offsets, vec![0, 16, 32, 40, 48]);
        assert_eq!((l.size, l.align), (64, 16));
        let v = Mixed {
            a: 7,
            b: [1.0, 2.0, 3.0, 4.0],
            c: 5.0,
            d: [8, 9],
            e: -1,
        };
        let bytes = v.to_bytes();
        assert_eq!(bytes.len(), 64);
        let word = |i: usize| u32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().unwrap());
        assert_eq!(word(0), 7);
        assert_eq!((1..4).map(word).collect::<Vec<_>>(), vec![0, 0, 0]);
        assert_eq!(f32::from_bits(word(4)), 1.0);
        assert_eq!(f32::from_bits(word(8)), 5.0);
        assert_eq!((word(10), word(11)), (8, 9));
        assert_eq!(word(12) as i32, -1);
    }

    #[test]
    fn literals_parse_as_wgsl() {
        assert_eq!(Value::f32(1e-6).literal(), "1e-6f");
        assert_eq!(Value::f32(3.0).literal(), "3.0f");
        assert_eq!(Value::u32(64).literal(), "64u");
        assert_eq!(Value::bool(true).literal(), "true");
    }
}
