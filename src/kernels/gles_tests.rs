//! Every variant a GL adapter can run (no subgroups, f16 or cooperative matrices: wgpu's GL
//! backend offers none of them) translates to GLSL ES 3.10 through naga's GLSL backend, as wgpu's
//! GL backend translates it on an OpenGL ES 3.1 board. llvmpipe's GL, which the kernel tests can
//! run on (`WGMOE_DEVICE=gl`), is desktop GL 4.5 and takes naga's desktop GLSL instead, so this
//! is the one check of the ES path without such a board. No GPU needed.

use naga::back::glsl;
use naga::valid::{Capabilities, ValidationFlags, Validator};

/// Translates each entry point of `source`; the errors, one per entry point that fails.
fn to_gles(what: &str, source: &str) -> Vec<String> {
    let module = match naga::front::wgsl::parse_str(source) {
        Ok(m) => m,
        Err(e) => return vec![format!("{what}: {}", e.emit_to_string(source))],
    };
    let caps = Capabilities::all() - Capabilities::SUBGROUP - Capabilities::SUBGROUP_BARRIER;
    let info = match Validator::new(ValidationFlags::all(), caps).validate(&module) {
        Ok(i) => i,
        Err(e) => return vec![format!("{what}: {}", e.emit_to_string(source))],
    };
    let mut binding_map = glsl::BindingMap::default();
    for (_, g) in module.global_variables.iter() {
        if let Some(b) = &g.binding {
            binding_map.insert(b.clone(), b.binding as u8);
        }
    }
    let options = glsl::Options {
        version: glsl::Version::Embedded {
            version: 310,
            is_webgl: false,
        },
        writer_flags: glsl::WriterFlags::empty(),
        binding_map,
        zero_initialize_workgroup_memory: false,
    };
    let mut errors = Vec::new();
    for ep in &module.entry_points {
        let name = &ep.name;
        let (m, i) = match naga::back::pipeline_constants::process_overrides(
            &module,
            &info,
            Some((ep.stage, name)),
            &Default::default(),
        ) {
            Ok(r) => r,
            Err(e) => {
                errors.push(format!("{what} {name}: overrides: {e}"));
                continue;
            }
        };
        let pipeline = glsl::PipelineOptions {
            shader_stage: ep.stage,
            entry_point: name.clone(),
            multiview: None,
        };
        let mut out = String::new();
        let policies = naga::proc::BoundsCheckPolicies::default();
        let written = glsl::Writer::new(&mut out, &m, &i, &options, &pipeline, policies).and_then(|mut w| w.write());
        if let Err(e) = written {
            errors.push(format!("{what} {name}: {e}"));
        }
    }
    errors
}

#[test]
fn every_gl_variant_translates_to_glsl_es_310() {
    let mut errors = Vec::new();
    let mut checked = 0;
    for c in super::all_variants() {
        let shader = c.build(false);
        if shader.source.contains("enable f16") || c.coop_side.is_some() {
            continue;
        }
        checked += 1;
        errors.extend(to_gles(&format!("{}[{}]", c.family(), c.variant), &shader.source));
    }
    assert!(checked > 20, "only {checked} variants checked");
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}
