//! Where CPUID values come from.

/// The four output registers of one CPUID query.
/// `repr(C)`: pvops' call sites receive it from an `extern "C"` function
/// as a 16-byte integer aggregate in RAX:RDX (System V x86-64 psABI, 3.2.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct CpuidResult {
    /// EAX.
    pub eax: u32,
    /// EBX.
    pub ebx: u32,
    /// ECX.
    pub ecx: u32,
    /// EDX.
    pub edx: u32,
}

/// Something that answers CPUID queries: the CPU itself, a recorded dump, or
/// a pvops table entry.
pub trait CpuidSource {
    /// Executes CPUID with EAX = `leaf` and ECX = `subleaf`.
    fn cpuid(&self, leaf: u32, subleaf: u32) -> CpuidResult;
}

impl<F: Fn(u32, u32) -> CpuidResult> CpuidSource for F {
    fn cpuid(&self, leaf: u32, subleaf: u32) -> CpuidResult {
        self(leaf, subleaf)
    }
}

/// The CPUID instruction of the CPU this code runs on.
#[derive(Clone, Copy, Debug, Default)]
pub struct NativeCpuid;

impl CpuidSource for NativeCpuid {
    fn cpuid(&self, leaf: u32, subleaf: u32) -> CpuidResult {
        #[cfg(target_arch = "x86_64")]
        {
            // CPUID is available on every x86-64 CPU and has no side effects
            // beyond serialising; `__cpuid_count` is a safe function.
            let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
            CpuidResult {
                eax: r.eax,
                ebx: r.ebx,
                ecx: r.ecx,
                edx: r.edx,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (leaf, subleaf);
            CpuidResult::default()
        }
    }
}

/// Adapts a [`CpuidSource`] to `raw-cpuid`'s reader trait.
pub(crate) struct Reader<'a, S: ?Sized>(pub(crate) &'a S);

impl<S: CpuidSource + ?Sized> Clone for Reader<'_, S> {
    fn clone(&self) -> Self {
        Reader(self.0)
    }
}

impl<S: CpuidSource + ?Sized> raw_cpuid::CpuIdReader for Reader<'_, S> {
    fn cpuid2(&self, eax: u32, ecx: u32) -> raw_cpuid::CpuIdResult {
        let r = self.0.cpuid(eax, ecx);
        raw_cpuid::CpuIdResult {
            eax: r.eax,
            ebx: r.ebx,
            ecx: r.ecx,
            edx: r.edx,
        }
    }
}

/// Assembles a 12-byte signature from three registers, in the order given.
pub(crate) fn signature(a: u32, b: u32, c: u32) -> [u8; 12] {
    let mut s = [0u8; 12];
    s[0..4].copy_from_slice(&a.to_le_bytes());
    s[4..8].copy_from_slice(&b.to_le_bytes());
    s[8..12].copy_from_slice(&c.to_le_bytes());
    s
}
