//! What `WGPU_BACKEND` asks for, read with wgpu's own spellings, so that an adapter search it
//! narrowed to nothing says so (and what exists without it) instead of blaming the drivers. wgpu
//! itself only logs a warning for a name it does not know and then looks on no backend at all.

use wgpu::Backends;

/// wgpu's names for its backends (`wgpu_types::Backends::from_comma_list`, matched
/// case-insensitively); the first name of each backend is the one wgmoe prints.
pub const SPELLINGS: &[(&str, Backends)] = &[
    ("vulkan", Backends::VULKAN),
    ("vk", Backends::VULKAN),
    ("metal", Backends::METAL),
    ("mtl", Backends::METAL),
    ("dx12", Backends::DX12),
    ("d3d12", Backends::DX12),
    ("gl", Backends::GL),
    ("gles", Backends::GL),
    ("opengl", Backends::GL),
    ("webgpu", Backends::BROWSER_WEBGPU),
    ("noop", Backends::NOOP),
];

/// The backend one name means (any of wgpu's spellings, any case), if wgpu knows it.
pub fn parse_backend(name: &str) -> Option<Backends> {
    let name = name.trim().to_ascii_lowercase();
    SPELLINGS.iter().find(|(s, _)| *s == name).map(|&(_, b)| b)
}

/// The backends this build of wgpu was compiled with (Metal only on Apple, DX12 only on Windows,
/// noop only with the `noop` feature).
pub fn built_in() -> Backends {
    wgpu::Instance::enabled_backend_features()
}

/// The printed names of `backends`, comma-separated, in [`SPELLINGS`]' order.
pub fn names(backends: Backends) -> String {
    let mut out: Vec<&str> = Vec::new();
    for &(name, b) in SPELLINGS {
        if backends.contains(b) && !out.iter().any(|n| parse_backend(n) == Some(b)) {
            out.push(name);
        }
    }
    if out.is_empty() {
        "none".into()
    } else {
        out.join(", ")
    }
}

/// wgpu's spellings as a person reads them: `vulkan (vk), metal (mtl), ...`.
fn spellings() -> String {
    let mut groups: Vec<(Backends, Vec<&str>)> = Vec::new();
    for &(name, b) in SPELLINGS {
        match groups.iter_mut().find(|(g, _)| *g == b) {
            Some((_, names)) => names.push(name),
            None => groups.push((b, vec![name])),
        }
    }
    groups
        .iter()
        .map(|(_, n)| match n.split_first() {
            Some((first, [])) => first.to_string(),
            Some((first, rest)) => format!("{first} ({})", rest.join(", ")),
            None => String::new(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `WGPU_BACKEND` as wgpu reads it: a comma-separated list of backend names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendFilter {
    /// The variable's value as set.
    pub value: String,
    /// The backends its names allow (wgpu enumerates only these).
    pub allowed: Backends,
    /// Its names wgpu does not know (wgpu skips them with a log warning).
    pub unknown: Vec<String>,
}

impl BackendFilter {
    pub fn parse(value: &str) -> Self {
        let mut allowed = Backends::empty();
        let mut unknown = Vec::new();
        // Empty items ("vulkan,") are skipped: wgpu warns about them but they change nothing.
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match parse_backend(name) {
                Some(b) => allowed |= b,
                None => unknown.push(name.to_string()),
            }
        }
        Self {
            value: value.to_string(),
            allowed,
            unknown,
        }
    }

    /// `WGPU_BACKEND` if it is set (an empty value too: wgpu then allows no backend).
    pub fn from_env() -> Option<Self> {
        std::env::var("WGPU_BACKEND").ok().map(|v| Self::parse(&v))
    }

    /// Why this value is wrong on its own (names wgpu does not know, or no name at all), whatever
    /// adapters exist: wgpu would drop those names silently.
    pub fn misspelt(&self) -> Option<String> {
        if self.unknown.is_empty() && !self.allowed.is_empty() {
            return None;
        }
        let what = if self.unknown.is_empty() {
            "names no backend".to_string()
        } else {
            let quoted: Vec<String> = self.unknown.iter().map(|n| format!("{n:?}")).collect();
            format!("names no backend wgpu knows: {}", quoted.join(", "))
        };
        Some(format!(
            "WGPU_BACKEND={:?} {what} (wgpu's names, comma-separated: {}; this build has: {}). Fix \
             WGPU_BACKEND or unset it to search every backend.",
            self.value,
            spellings(),
            names(built_in())
        ))
    }

    /// Why no adapter was found with this filter when `elsewhere` (one `backend (adapter name)`
    /// per adapter on any backend, found without the filter) is not empty.
    pub fn excluded(&self, elsewhere: &[(Backends, String)]) -> String {
        let lacking = self.allowed - built_in();
        let lacking = if lacking.is_empty() {
            String::new()
        } else {
            format!(
                " ({} not in this build, which has: {})",
                names(lacking),
                names(built_in())
            )
        };
        let found: Vec<String> = elsewhere
            .iter()
            .map(|(b, name)| format!("{} ({name})", names(*b)))
            .collect();
        let mut on = Backends::empty();
        for (b, _) in elsewhere {
            on |= *b;
        }
        format!(
            "no adapter on the backends WGPU_BACKEND={:?} allows{lacking}; adapters exist on: {}. \
             Unset WGPU_BACKEND or set it to {}.",
            self.value,
            found.join(", "),
            names(on).replace(", ", " or ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table is wgpu's: every spelling means what `from_comma_list` makes of it.
    #[test]
    fn spellings_are_wgpus() {
        for &(name, b) in SPELLINGS {
            assert_eq!(Backends::from_comma_list(name), b, "{name}");
            assert_eq!(Backends::from_comma_list(&name.to_uppercase()), b, "{name}");
        }
        let every = SPELLINGS.iter().fold(Backends::empty(), |a, &(_, b)| a | b);
        assert_eq!(every, Backends::all(), "a backend wgpu has is missing from SPELLINGS");
    }

    #[test]
    fn parses_like_wgpu() {
        let f = BackendFilter::parse(" Vulkan , GLES,");
        assert_eq!(f.allowed, Backends::VULKAN | Backends::GL);
        assert_eq!(f.allowed, Backends::from_comma_list(" Vulkan , GLES,"));
        assert!(f.unknown.is_empty() && f.misspelt().is_none());
        let f = BackendFilter::parse("vulkn,gl");
        assert_eq!(f.unknown, ["vulkn"]);
        let e = f.misspelt().unwrap();
        assert!(
            e.starts_with(r#"WGPU_BACKEND="vulkn,gl" names no backend wgpu knows: "vulkn""#),
            "{e}"
        );
        assert!(e.contains("vulkan (vk)") && e.contains("this build has: "), "{e}");
        let e = BackendFilter::parse(" ").misspelt().unwrap();
        assert!(e.starts_with(r#"WGPU_BACKEND=" " names no backend ("#), "{e}");
    }

    #[test]
    fn names_print_once_in_order() {
        assert_eq!(names(Backends::GL | Backends::VULKAN), "vulkan, gl");
        assert_eq!(names(Backends::empty()), "none");
    }

    #[test]
    fn excluded_names_what_exists() {
        let f = BackendFilter::parse("webgpu");
        let e = f.excluded(&[(Backends::VULKAN, "llvmpipe".into()), (Backends::GL, "llvmpipe".into())]);
        assert!(
            e.starts_with(r#"no adapter on the backends WGPU_BACKEND="webgpu" allows (webgpu not in this build"#),
            "{e}"
        );
        assert!(
            e.contains("adapters exist on: vulkan (llvmpipe), gl (llvmpipe)."),
            "{e}"
        );
        assert!(e.ends_with("set it to vulkan or gl."), "{e}");
    }
}
