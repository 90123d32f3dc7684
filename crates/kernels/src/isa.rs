//! Run-time choice of the instruction set the kernels use.

use crate::error::{KernelError, Result};
use std::sync::OnceLock;

/// An instruction-set path of the dot-product kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable scalar code: the reference every other path is tested against.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C.
    Avx2,
    /// x86-64 AVX-512 (F, BW, VL) with VNNI (`vpdpbusd`), on top of
    /// [`Isa::Avx2`]: the tiled prefill kernels, the packed Q4_K / Q8_0
    /// matrix × vector kernels and the Q6_K row kernel use it; every other
    /// kernel runs its AVX2 form.
    Avx512,
    /// [`Isa::Avx512`] with Intel AMX tiles (AMX-TILE, AMX-BF16, granted by
    /// the OS): the prefill (matrix × matrix) of F16/BF16 runs on
    /// `tdpbf16ps`, and where the CPU has AMX-INT8 that of the k-quants
    /// (`tdpbsud`) and of packed Q8_0 (`tdpbsud`); every other kernel runs
    /// its [`Isa::Avx512`] form.
    Amx,
    /// AArch64 Advanced SIMD (every AArch64 CPU): widening multiplies.
    Neon,
    /// AArch64 Advanced SIMD with the Armv8.2 dot-product instructions
    /// (`sdot`: Apple M1 and later, Graviton 2 and later).
    NeonDot,
}

impl Isa {
    /// Every path, slowest first.
    pub const ALL: [Isa; 6] = [
        Isa::Scalar,
        Isa::Avx2,
        Isa::Avx512,
        Isa::Amx,
        Isa::Neon,
        Isa::NeonDot,
    ];

    /// Whether this CPU can run the path.
    pub fn available(self) -> bool {
        match self {
            Isa::Scalar => true,
            Isa::Avx2 => {
                #[cfg(target_arch = "x86_64")]
                {
                    is_x86_feature_detected!("avx2")
                        && is_x86_feature_detected!("fma")
                        && is_x86_feature_detected!("f16c")
                }
                #[cfg(not(target_arch = "x86_64"))]
                {
                    false
                }
            }
            Isa::Avx512 => {
                #[cfg(target_arch = "x86_64")]
                {
                    Isa::Avx2.available()
                        && is_x86_feature_detected!("avx512f")
                        && is_x86_feature_detected!("avx512bw")
                        && is_x86_feature_detected!("avx512vl")
                        && is_x86_feature_detected!("avx512vnni")
                }
                #[cfg(not(target_arch = "x86_64"))]
                {
                    false
                }
            }
            Isa::Amx => {
                #[cfg(target_arch = "x86_64")]
                {
                    Isa::Avx512.available() && amx::available()
                }
                #[cfg(not(target_arch = "x86_64"))]
                {
                    false
                }
            }
            Isa::Neon | Isa::NeonDot => {
                #[cfg(target_arch = "aarch64")]
                {
                    std::arch::is_aarch64_feature_detected!("neon")
                        && (self == Isa::Neon || std::arch::is_aarch64_feature_detected!("dotprod"))
                }
                #[cfg(not(target_arch = "aarch64"))]
                {
                    false
                }
            }
        }
    }

    /// Whether this path runs the AVX2 kernels ([`Isa::Avx2`], and
    /// [`Isa::Avx512`] and [`Isa::Amx`] wherever they have no kernel of
    /// their own).
    pub fn has_avx2(self) -> bool {
        matches!(self, Isa::Avx2 | Isa::Avx512 | Isa::Amx)
    }

    /// Whether this path runs the AVX-512 kernels ([`Isa::Avx512`], and
    /// [`Isa::Amx`] wherever it has no kernel of its own).
    pub fn has_avx512(self) -> bool {
        matches!(self, Isa::Avx512 | Isa::Amx)
    }

    /// Whether this is one of the AArch64 paths.
    pub fn is_neon(self) -> bool {
        matches!(self, Isa::Neon | Isa::NeonDot)
    }

    /// The paths this CPU can run.
    pub fn available_paths() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.available()).collect()
    }

    /// `Ok(self)` if available, else an error.
    pub fn checked(self) -> Result<Isa> {
        if self.available() {
            Ok(self)
        } else {
            Err(KernelError::IsaUnavailable(self))
        }
    }

    /// The path's name, as [`Isa::from_name`] reads it.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Amx => "amx",
            Isa::Neon => "neon",
            Isa::NeonDot => "neon-dot",
        }
    }

    /// Parses `scalar` / `avx2` / `avx512` / `amx` / `neon` / `neon-dot` (case-insensitive).
    pub fn from_name(name: &str) -> Option<Isa> {
        match name.to_ascii_lowercase().as_str() {
            "scalar" => Some(Isa::Scalar),
            "avx2" => Some(Isa::Avx2),
            "avx512" => Some(Isa::Avx512),
            "amx" => Some(Isa::Amx),
            "neon" => Some(Isa::Neon),
            "neon-dot" => Some(Isa::NeonDot),
            _ => None,
        }
    }

    /// The fastest available path, unless the environment variable
    /// `MISTRAL_KERNELS_ISA` (`scalar` | `avx2` | `avx512` | `amx` | `neon` | `neon-dot`) forces one (an unknown or
    /// unavailable value is ignored with a warning). Detected once.
    pub fn best() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| {
            if let Ok(v) = std::env::var("MISTRAL_KERNELS_ISA") {
                match Isa::from_name(&v).filter(|i| i.available()) {
                    Some(i) => return i,
                    None => {
                        tracing::warn!("MISTRAL_KERNELS_ISA={v} is unknown or unavailable; ignored")
                    }
                }
            }
            Isa::ALL
                .into_iter()
                .rev()
                .find(|i| i.available())
                .unwrap_or(Isa::Scalar)
        })
    }
}

/// Whether the CPU has AVX-512F and AVX-512 BF16 (`vdpbf16ps`).
pub(crate) fn has_avx512_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// AMX detection: CPUID and the Linux permission request for the tile data
/// state.
#[cfg(target_arch = "x86_64")]
pub(crate) mod amx {
    use std::sync::OnceLock;

    /// Whether this CPU and OS run the AMX kernels: CPUID reports AMX-TILE and
    /// AMX-BF16, the CPU has AVX-512 BF16 (the kernels round with
    /// `vcvtne2ps2bf16`), and Linux granted this process the tile data state
    /// (`arch_prctl(ARCH_REQ_XCOMP_PERM)`; without it the first tile
    /// instruction faults). Asked once per process.
    pub(crate) fn available() -> bool {
        static OK: OnceLock<bool> = OnceLock::new();
        *OK.get_or_init(|| cpu_has_amx_bf16() && os_grants_tiles())
    }

    fn cpu_has_amx_bf16() -> bool {
        if !(is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512bf16"))
        {
            return false;
        }
        // CPUID leaf 7, sub-leaf 0, EDX: bit 22 AMX-BF16, bit 24 AMX-TILE.
        // CPUID exists on every x86-64 CPU, and leaf 7 is below the maximum
        // leaf of any CPU with AVX-512 (checked above).
        let l7 = std::arch::x86_64::__cpuid_count(7, 0);
        l7.edx & (1 << 22) != 0 && l7.edx & (1 << 24) != 0
    }

    /// Whether the CPU has AMX-INT8 (`tdpbusd` and its signed/unsigned
    /// variants) besides what [`available`] checks.
    pub(crate) fn has_int8() -> bool {
        // CPUID leaf 7, sub-leaf 0, EDX bit 25 (leaf 7 exists: see above; only
        // asked once `available` held).
        available() && std::arch::x86_64::__cpuid_count(7, 0).edx & (1 << 25) != 0
    }

    #[cfg(target_os = "linux")]
    fn os_grants_tiles() -> bool {
        const ARCH_GET_XCOMP_PERM: libc::c_long = 0x1022;
        const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
        const XFEATURE_XTILEDATA: libc::c_long = 18;
        // SAFETY: arch_prctl with these codes reads or sets a permission bit of
        // this process; the GET form writes one u64 to `perm`, which is valid.
        unsafe {
            if libc::syscall(
                libc::SYS_arch_prctl,
                ARCH_REQ_XCOMP_PERM,
                XFEATURE_XTILEDATA,
            ) != 0
            {
                return false;
            }
            let mut perm: u64 = 0;
            libc::syscall(
                libc::SYS_arch_prctl,
                ARCH_GET_XCOMP_PERM,
                &mut perm as *mut u64,
            ) == 0
                && perm & (1 << XFEATURE_XTILEDATA) != 0
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn os_grants_tiles() -> bool {
        // Other systems need their own request (or none); not done yet.
        false
    }
}
