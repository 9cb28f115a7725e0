//! What wgmoe's kernels need of an adapter, checked before a device is opened: an adapter short of
//! it (an OpenGL ES 3.1 board may offer only 4 storage buffers per shader stage, OpenGL ES 3.0 no
//! compute shaders at all) is refused up front with the limit named, and `wgmoe devices` prints
//! what stops it, instead of a validation error from the first pipeline past the limit.
//!
//! Binding counts come from the kernels' own sources (what each entry point uses, as naga reflects
//! it and as wgpu lays out its pipeline: src/kernels/mod.rs `needs`). This layer sits below the
//! kernels, so it holds the result ([`KERNEL_BINDINGS`]), and a kernels test keeps it equal to
//! the reflection: a kernel that starts binding more fails that test until it is updated. Workgroup
//! sizes and memory are not counted the same way: kernels pick some of them at run time within the
//! adapter's limits, and the others are known to fit WebGPU's defaults because every kernel's
//! portable twin runs (and is tested) within them; wgmoe has no smaller variants, so those defaults
//! are the need.

/// One limit wgmoe's kernels need, with why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Need {
    /// The limit's name as wgpu (and WebGPU) spells it.
    pub limit_name: &'static str,
    pub needed: u64,
    /// What needs it (`the moe kernels bind 8`).
    pub why: String,
}

/// Everything wgmoe's kernels need of an adapter.
#[derive(Clone, Debug)]
pub struct Needs(pub Vec<Need>);

/// The limits a [`Need`] can name.
const LIMIT_NAMES: [&str; 6] = [
    "max_storage_buffers_per_shader_stage",
    "max_uniform_buffers_per_shader_stage",
    "max_bindings_per_bind_group",
    "max_compute_workgroup_storage_size",
    "max_compute_invocations_per_workgroup",
    "max_compute_workgroup_size_x",
];

/// A limit's value by the name [`Need::limit_name`] uses.
fn limit(limits: &wgpu::Limits, name: &str) -> Option<u64> {
    Some(match name {
        "max_storage_buffers_per_shader_stage" => limits.max_storage_buffers_per_shader_stage.into(),
        "max_uniform_buffers_per_shader_stage" => limits.max_uniform_buffers_per_shader_stage.into(),
        "max_bindings_per_bind_group" => limits.max_bindings_per_bind_group.into(),
        "max_compute_workgroup_storage_size" => limits.max_compute_workgroup_storage_size.into(),
        "max_compute_invocations_per_workgroup" => limits.max_compute_invocations_per_workgroup.into(),
        "max_compute_workgroup_size_x" => limits.max_compute_workgroup_size_x.into(),
        _ => return None,
    })
}

/// The buffers one kernel entry point binds (what its pipeline's layout holds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryBindings {
    /// `family entry` (`moe moe_down_gemm`).
    pub what: String,
    pub storage: u32,
    pub uniform: u32,
}

/// The most buffers any kernel entry point binds, and which: (storage buffers, uniform buffers,
/// both), as `kernels::needs()` reflects them from the composed sources (checked equal by
/// `kernels::tests::recorded_bindings_match_the_sources`).
pub const KERNEL_BINDINGS: [(u32, &str); 3] = [(8, "mla prepare_mla"), (1, "moe gemm_coop"), (9, "mla prepare_mla")];

/// What wgmoe's kernels need of an adapter, from [`KERNEL_BINDINGS`].
pub fn kernel_needs() -> Needs {
    let [storage, uniform, both] = KERNEL_BINDINGS;
    Needs::from_most(storage, uniform, both)
}

/// The entry point with the most of `count`, and that count.
fn most(entries: &[EntryBindings], count: impl Fn(&EntryBindings) -> u32) -> (u64, &str) {
    entries
        .iter()
        .map(|e| (u64::from(count(e)), e.what.as_str()))
        .max_by_key(|&(n, _)| n)
        .unwrap_or((0, "no"))
}

impl Needs {
    /// The needs of kernels whose entry points bind `entries` (one bind group each).
    pub fn of(entries: &[EntryBindings]) -> Self {
        let max = |count: &dyn Fn(&EntryBindings) -> u32| {
            let (n, what) = most(entries, count);
            (n as u32, what)
        };
        Self::from_most(
            max(&|e| e.storage),
            max(&|e| e.uniform),
            max(&|e| e.storage + e.uniform),
        )
    }

    /// The needs of kernels whose most-binding entry points are these (count, `family entry`):
    /// storage buffers, uniform buffers, both.
    pub fn from_most(storage: (u32, &str), uniform: (u32, &str), both: (u32, &str)) -> Self {
        let bind = |limit_name, (needed, what): (u32, &str), kind: &str| Need {
            limit_name,
            needed: u64::from(needed),
            why: format!(
                "the {what} kernel binds {needed} {kind}{}",
                if needed == 1 { "" } else { "s" }
            ),
        };
        let storage = bind("max_storage_buffers_per_shader_stage", storage, "storage buffer");
        let uniform = bind("max_uniform_buffers_per_shader_stage", uniform, "uniform buffer");
        let group = bind("max_bindings_per_bind_group", both, "buffer");
        let webgpu = wgpu::Limits::default();
        let portable = |limit_name: &'static str, what: &str| Need {
            limit_name,
            needed: limit(&webgpu, limit_name).unwrap_or(0),
            why: format!("wgmoe's kernels are built for WebGPU's default {what}"),
        };
        Needs(vec![
            storage,
            uniform,
            group,
            portable("max_compute_workgroup_storage_size", "workgroup memory"),
            portable("max_compute_invocations_per_workgroup", "workgroup size"),
            portable("max_compute_workgroup_size_x", "workgroup width"),
        ])
    }

    /// What an adapter with `limits` (and compute shaders or not, wgpu's downlevel flag) lacks,
    /// one line each; empty when it can run every kernel.
    pub fn unmet(&self, limits: &wgpu::Limits, compute_shaders: bool) -> Vec<String> {
        let mut out = Vec::new();
        if !compute_shaders {
            out.push("no compute shaders (OpenGL ES 3.0 or WebGL 2; wgmoe needs OpenGL ES 3.1 or newer)".into());
        }
        for n in &self.0 {
            let have = limit(limits, n.limit_name).unwrap_or(0);
            if have < n.needed {
                out.push(format!("{} is {have}, {} (needs {})", n.limit_name, n.why, n.needed));
            }
        }
        out
    }
}

/// Whether `limits` reach WebGPU's defaults in every limit a [`Need`] names. Every kernel runs
/// within those defaults (the `--portable` twins; `counts_come_from_the_entry_points` checks the
/// counted needs too), so such an adapter needs no closer look.
pub fn meets_webgpu_defaults(limits: &wgpu::Limits) -> bool {
    let webgpu = wgpu::Limits::default();
    LIMIT_NAMES.iter().all(|n| limit(limits, n) >= limit(&webgpu, n))
}

/// Whether `adapter` runs compute shaders (every backend but OpenGL ES 3.0 / WebGL 2 does).
pub fn has_compute(adapter: &wgpu::Adapter) -> bool {
    adapter
        .get_downlevel_capabilities()
        .flags
        .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_come_from_the_entry_points() {
        let entries = [
            EntryBindings {
                what: "a x".into(),
                storage: 3,
                uniform: 1,
            },
            EntryBindings {
                what: "b y".into(),
                storage: 6,
                uniform: 0,
            },
        ];
        let needs = Needs::of(&entries);
        assert_eq!(needs.0[0].needed, 6);
        assert_eq!(needs.0[0].why, "the b y kernel binds 6 storage buffers");
        assert_eq!((needs.0[1].needed, needs.0[2].needed), (1, 6));
        // wgmoe runs on WebGPU's defaults (--portable), so they meet every need of its kernels.
        let ours = kernel_needs();
        assert!(ours.unmet(&wgpu::Limits::default(), true).is_empty(), "{ours:?}");
        assert!(ours.0[0].needed >= 4, "{ours:?}");
        assert!(ours.0.iter().all(|n| LIMIT_NAMES.contains(&n.limit_name)));
        assert!(meets_webgpu_defaults(&wgpu::Limits::default()));
        let gles = wgpu::Limits {
            max_storage_buffers_per_shader_stage: 4,
            ..wgpu::Limits::default()
        };
        assert!(!meets_webgpu_defaults(&gles));
    }

    #[test]
    fn unmet_names_the_limit_and_what_needs_it() {
        let needs = kernel_needs();
        let gles = wgpu::Limits {
            max_storage_buffers_per_shader_stage: 4,
            ..wgpu::Limits::default()
        };
        let e = needs.unmet(&gles, true);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("max_storage_buffers_per_shader_stage is 4, the "),
            "{e:?}"
        );
        assert!(e[0].contains(" kernel binds "), "{e:?}");
        let e = needs.unmet(&wgpu::Limits::default(), false);
        assert!(e[0].contains("no compute shaders"), "{e:?}");
        let small = wgpu::Limits {
            max_compute_invocations_per_workgroup: 128,
            ..wgpu::Limits::default()
        };
        let e = needs.unmet(&small, true);
        assert_eq!(e, ["max_compute_invocations_per_workgroup is 128, wgmoe's kernels are built for WebGPU's default workgroup size (needs 256)"]);
    }
}
