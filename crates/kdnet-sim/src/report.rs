//! What the simulated target reports: the events a test makes it raise
//! ([`SimEvent`]), what it saw and did ([`SimStats`]), and what it hands
//! back when stopped ([`SimEnd`]).

use pooldump_kit::Machine;
use pooldump_kit::run::Runtime;

/// Something a running target reports on its own ([`SimTarget::emit`](crate::SimTarget::emit)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimEvent {
    /// A hard-coded `int3` at `pc` on `processor` (PoolHitTag's break,
    /// DbgBreakPoint): the target stops with STATUS_BREAKPOINT, Rip = pc.
    Breakpoint { processor: u16, pc: u64 },
    /// Any other exception: the target stops with `code`.
    Exception {
        processor: u16,
        pc: u64,
        code: u32,
        parameters: Vec<u64>,
        first_chance: bool,
    },
    /// An image loads: the target stops with a load-symbols state change.
    LoadSymbols {
        processor: u16,
        base: u64,
        size: u32,
        path: String,
    },
    /// DbgPrint: a DEBUG_IO PrintString; the target keeps running.
    Print { processor: u16, text: String },
}

/// What the simulated target saw and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimStats {
    pub offers_sent: u64,
    pub handshakes: u64,
    pub breakins: u64,
    /// Manipulate requests executed (each id once).
    pub requests_executed: u64,
    /// Requests executed a second time: must stay 0.
    pub double_executions: u64,
    /// Retransmitted requests recognised and only ACKed again.
    pub duplicate_requests: u64,
    pub resends_sent: u64,
    pub resets_received: u64,
    pub writes: u64,
    pub continues: u64,
    /// Inbound datagrams that did not authenticate.
    pub dropped_bad_tag: u64,
    pub dropped_other: u64,
    pub faults_dropped: u64,
    pub faults_duplicated: u64,
    pub faults_reordered: u64,
    pub faults_corrupted: u64,
    pub forged_sent: u64,
    /// Times the running machine stopped on its own (int3, bug check).
    pub stops: u64,
    /// DEBUG_IO prints sent.
    pub prints_sent: u64,
    /// Simulated nanoseconds the machine has run.
    pub sim_ns: u64,
    /// The machine bug-checked.
    pub bugchecked: bool,
    /// Whether the target runs (as opposed to stopped in the debugger).
    pub running: bool,
    /// The ContinueStatus of the last Continue/Continue2.
    pub last_continue_status: Option<u32>,
    /// SetContext requests executed.
    pub set_contexts: u64,
    /// Events raised with [`SimTarget::emit`](crate::SimTarget::emit) and sent.
    pub events_sent: u64,
    /// State changes sent again on a RESEND or RESET while stopped.
    pub stops_resent: u64,
    /// Datagrams not answered while silent.
    pub ignored_while_silent: u64,
}

/// What a stopped simulated target hands back.
pub struct SimEnd {
    pub machine: Machine,
    pub runtime: Option<Runtime>,
}
