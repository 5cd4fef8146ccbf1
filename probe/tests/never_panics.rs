//! Property tests: `probe` and `Dump::parse` never panic, and what the scan
//! reports is always well formed, whatever CPUID answers.

use proptest::prelude::*;
use pvops_probe::{
    probe, CpuidResult, CpuidSource, Dump, Probe, HYPERVISOR_CPUID_BUDGET, HYPERVISOR_LEAF_END,
    HYPERVISOR_LEAF_FIRST, HYPERVISOR_LEAF_STEP, MAX_INTERFACES, TIMING_LEAF,
};

/// How leaves not explicitly listed are answered.
#[derive(Clone, Copy, Debug)]
enum Fill {
    /// All zero, as AMD answers unimplemented leaves.
    Zero,
    /// Pseudo-random junk per (leaf, subleaf).
    Junk,
    /// The highest basic leaf's answer, as Intel does.
    MirrorMax,
    /// Every hypervisor base answers the same signature and EAX.
    EveryBaseSignature,
    /// Every hypervisor base answers a different pseudo-random signature.
    EveryBaseDistinct,
}

#[derive(Clone, Debug)]
struct Fuzz {
    seed: u64,
    fill: Fill,
    max_basic: u32,
    max_extended: u32,
    hv_eax: u32,
    signature: [u32; 3],
    overrides: Vec<(u32, u32, [u32; 4])>,
}

fn mix(mut x: u64) -> u64 {
    // splitmix64 finaliser.
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn junk(seed: u64, leaf: u32, subleaf: u32) -> CpuidResult {
    let a = mix(seed ^ (u64::from(leaf) << 32) ^ u64::from(subleaf));
    let b = mix(a);
    CpuidResult {
        eax: a as u32,
        ebx: (a >> 32) as u32,
        ecx: b as u32,
        edx: (b >> 32) as u32,
    }
}

impl CpuidSource for Fuzz {
    fn cpuid(&self, leaf: u32, subleaf: u32) -> CpuidResult {
        if let Some((_, _, r)) = self
            .overrides
            .iter()
            .find(|(l, s, _)| *l == leaf && *s == subleaf)
        {
            return CpuidResult {
                eax: r[0],
                ebx: r[1],
                ecx: r[2],
                edx: r[3],
            };
        }
        let mut r = match self.fill {
            Fill::Zero => CpuidResult::default(),
            Fill::Junk => junk(self.seed, leaf, subleaf),
            Fill::MirrorMax => junk(self.seed, self.max_basic, 0),
            Fill::EveryBaseSignature | Fill::EveryBaseDistinct => {
                let hv = (HYPERVISOR_LEAF_FIRST..HYPERVISOR_LEAF_END).contains(&leaf);
                if hv && leaf.is_multiple_of(HYPERVISOR_LEAF_STEP) {
                    let sig = match self.fill {
                        Fill::EveryBaseSignature => self.signature,
                        _ => {
                            let j = junk(self.seed, leaf, 0);
                            [j.ebx, j.ecx, j.edx]
                        }
                    };
                    CpuidResult {
                        eax: self.hv_eax.wrapping_add(leaf & 0xFFFF_FF00),
                        ebx: sig[0],
                        ecx: sig[1],
                        edx: sig[2],
                    }
                } else {
                    junk(self.seed, leaf, subleaf)
                }
            }
        };
        if leaf == 0 {
            r.eax = self.max_basic;
        } else if leaf == 0x8000_0000 {
            r.eax = self.max_extended;
        }
        r
    }
}

/// Counts the CPUIDs executed through it.
struct Counting<'a, S> {
    source: &'a S,
    count: std::cell::Cell<u32>,
}

impl<'a, S: CpuidSource> Counting<'a, S> {
    fn new(source: &'a S) -> Self {
        Counting {
            source,
            count: std::cell::Cell::new(0),
        }
    }

    fn count(&self) -> u32 {
        self.count.get()
    }
}

impl<S: CpuidSource> CpuidSource for Counting<'_, S> {
    fn cpuid(&self, leaf: u32, subleaf: u32) -> CpuidResult {
        self.count.set(self.count.get() + 1);
        self.source.cpuid(leaf, subleaf)
    }
}

fn interesting_u32() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        Just(u32::MAX),
        Just(0x4000_0000u32),
        Just(0x4000_00FFu32),
        Just(0x4000_FFFFu32),
        Just(0x4001_0000u32),
        Just(0x8000_0000u32),
        Just(0x8000_FFFFu32),
        0u32..0x40,
        0x4000_0000u32..0x4001_0100,
        0x8000_0000u32..0x8000_0040,
        any::<u32>(),
    ]
}

fn fill() -> impl Strategy<Value = Fill> {
    prop_oneof![
        Just(Fill::Zero),
        Just(Fill::Junk),
        Just(Fill::MirrorMax),
        Just(Fill::EveryBaseSignature),
        Just(Fill::EveryBaseDistinct),
    ]
}

fn leaf_override() -> impl Strategy<Value = (u32, u32, [u32; 4])> {
    (
        interesting_u32(),
        prop_oneof![Just(0u32), 0u32..4, any::<u32>()],
        (interesting_u32(), any::<[u32; 3]>()).prop_map(|(a, [b, c, d])| [a, b, c, d]),
    )
}

fn fuzz() -> impl Strategy<Value = Fuzz> {
    (
        any::<u64>(),
        fill(),
        interesting_u32(),
        interesting_u32(),
        interesting_u32(),
        prop_oneof![
            Just([0x4b4d_564b, 0x564b_4d56, 0x0000_004d]),
            Just([0x7263_694d, 0x666f_736f, 0x7648_2074]),
            Just([0, 0, 0]),
            any::<[u32; 3]>(),
        ],
        prop::collection::vec(leaf_override(), 0..24),
    )
        .prop_map(
            |(seed, fill, max_basic, max_extended, hv_eax, signature, overrides)| Fuzz {
                seed,
                fill,
                max_basic,
                max_extended,
                hv_eax,
                signature,
                overrides,
            },
        )
}

fn check_well_formed(p: &Probe) {
    assert!(p.interfaces.len() <= MAX_INTERFACES);
    let mut previous: Option<u32> = None;
    for i in p.interfaces.iter() {
        assert!((HYPERVISOR_LEAF_FIRST..HYPERVISOR_LEAF_END).contains(&i.base));
        assert_eq!((i.base - HYPERVISOR_LEAF_FIRST) % HYPERVISOR_LEAF_STEP, 0);
        assert!(i.max_leaf >= i.base);
        assert!(i.max_leaf - i.base < HYPERVISOR_LEAF_STEP);
        assert_eq!(i.leaf_count(), i.max_leaf - i.base);
        assert_ne!(i.signature, [0; 12]);
        if let Some(prev) = previous {
            assert!(i.base > prev, "bases ascend");
        }
        previous = Some(i.base);
        let _ = i.signature_str().to_string();
        let _ = i.kind.name();
    }
    let distinct = p.interfaces.iter().enumerate().all(|(n, a)| {
        p.interfaces
            .iter()
            .skip(n + 1)
            .all(|b| b.signature != a.signature)
    });
    assert!(distinct, "a signature is reported once");
    if let Some(t) = p.timing_leaf() {
        assert_ne!(t.tsc_khz, 0);
        let first = p.interfaces.iter().next().unwrap();
        assert_eq!(first.base, HYPERVISOR_LEAF_FIRST);
        assert!(first.max_leaf >= TIMING_LEAF);
    }
    if let Some(l) = p.tsc_leaf {
        assert!(l.denominator != 0 && l.numerator != 0);
    }
    let _ = p.tsc_khz_from_leaf_15();
    let _ = p.primary_interface();
    let _ = format!("{p:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn probe_never_panics(f in fuzz()) {
        let counter = Counting::new(&f);
        let p = probe(&counter);
        check_well_formed(&p);
        // The reported cost is what was executed, and within the budget
        // whenever the hypervisor bit is set.
        prop_assert_eq!(p.cpuids, counter.count());
        if p.under_hypervisor() {
            prop_assert!(p.cpuids <= HYPERVISOR_CPUID_BUDGET, "{} CPUIDs", p.cpuids);
        }
        // Deterministic: the same answers give the same probe.
        prop_assert_eq!(probe(&f), p);
    }
}

// Dump lookups scan the text on every query, which is slow in debug builds:
// fewer cases for the dump-based properties.
proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn dump_parse_never_panics(text in ".{0,400}") {
        if let Ok(d) = Dump::parse(&text) {
            check_well_formed(&probe(&d));
        }
    }

    #[test]
    fn dump_parse_never_panics_on_leafish_lines(
        lines in prop::collection::vec(
            prop_oneof![
                "CPU( [0-9]{1,3})?:",
                "[ ]{0,4}0x[0-9a-fA-F]{1,9}( 0x[0-9a-f]{1,3})?: (e[a-d]x=0x[0-9a-f]{0,9} ?){0,5}",
                "#.{0,20}",
                ".{0,40}",
            ],
            0..40,
        )
    ) {
        let text = lines.join("\n");
        if let Ok(d) = Dump::parse(&text) {
            prop_assert!(!d.is_empty());
            for e in d.entries() {
                let _ = d.cpuid(e.leaf, e.subleaf);
            }
            check_well_formed(&probe(&d));
        }
    }

    #[test]
    fn dump_round_trips(
        entries in prop::collection::vec((any::<u32>(), 0u32..0x100, any::<[u32; 4]>()), 1..60),
        header in prop_oneof![Just("CPU:\n"), Just("CPU 0:\n"), Just("")],
    ) {
        let mut text = String::from(header);
        for (leaf, sub, r) in &entries {
            text.push_str(&format!(
                "   0x{leaf:08x} 0x{sub:02x}: eax=0x{:08x} ebx=0x{:08x} ecx=0x{:08x} edx=0x{:08x}\n",
                r[0], r[1], r[2], r[3]
            ));
        }
        text.push_str("CPU 1:\n   0x00000000 0x00: eax=0x1 ebx=0x2 ecx=0x3 edx=0x4\n");
        let d = Dump::parse(&text).unwrap();
        prop_assert_eq!(d.len(), entries.len());
        for (leaf, sub, r) in &entries {
            let first = entries.iter().find(|(l, s, _)| l == leaf && s == sub).unwrap().2;
            let got = d.cpuid(*leaf, *sub);
            prop_assert_eq!([got.eax, got.ebx, got.ecx, got.edx], first);
            let _ = r;
        }
        check_well_formed(&probe(&d));
    }

    #[test]
    fn mutated_fixture_never_panics(
        pos in any::<prop::sample::Index>(),
        insert in ".{0,8}",
        cut in 0usize..16,
    ) {
        let base = include_str!("dumps/host-cloud-vm.txt");
        let mut at = pos.index(base.len());
        while !base.is_char_boundary(at) {
            at -= 1;
        }
        let mut end = (at + cut).min(base.len());
        while !base.is_char_boundary(end) {
            end -= 1;
        }
        let text = format!("{}{}{}", &base[..at], insert, &base[end..]);
        if let Ok(d) = Dump::parse(&text) {
            check_well_formed(&probe(&d));
        }
    }
}

#[test]
fn pathological_every_base_signature() {
    // Every base answers KVM with a max leaf far outside its block.
    for hv_eax in [0, 0x4000_0000, 0x4000_FFFF, u32::MAX] {
        let f = Fuzz {
            seed: 1,
            fill: Fill::EveryBaseSignature,
            max_basic: u32::MAX,
            max_extended: u32::MAX,
            hv_eax,
            signature: [0x4b4d_564b, 0x564b_4d56, 0x0000_004d],
            overrides: Vec::new(),
        };
        let p = probe(&f);
        check_well_formed(&p);
        assert_eq!(p.interfaces.len(), 1);
    }
    // Distinct signatures everywhere. Bare metal (hypervisor bit clear):
    // the whole range, capped at MAX_INTERFACES. Under a hypervisor: the
    // chain of occupied bases until the CPUID budget is spent.
    for (ecx, expect) in [(0, None), (1 << 31, Some(HYPERVISOR_CPUID_BUDGET))] {
        let f = Fuzz {
            seed: 7,
            fill: Fill::EveryBaseDistinct,
            max_basic: 0x16,
            max_extended: 0x8000_0008,
            hv_eax: 0x10,
            signature: [0; 3],
            overrides: vec![(1, 0, [0, 0, ecx, 0])],
        };
        let p = probe(&f);
        check_well_formed(&p);
        match expect {
            None => {
                assert_eq!(p.interfaces.len(), MAX_INTERFACES);
                assert!(p.cpuids > HYPERVISOR_CPUID_BUDGET, "{}", p.cpuids);
            }
            Some(budget) => {
                assert_eq!(p.cpuids, budget);
                assert!(p.interfaces.len() >= 4, "{:?}", p.interfaces);
            }
        }
    }
}
