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
    Breakpoint {
        /// The processor that stops (DBGKD_WAIT_STATE_CHANGE64.Processor);
        /// an event for a processor the machine lacks is not sent.
        processor: u16,
        /// The `int3`'s address (ProgramCounter and the context's Rip).
        pc: u64,
    },
    /// Any other exception: the target stops with `code`.
    Exception {
        /// The processor that stops, as for [`SimEvent::Breakpoint`].
        processor: u16,
        /// Where the exception was raised (ExceptionAddress, Rip).
        pc: u64,
        /// EXCEPTION_RECORD64.ExceptionCode (an NTSTATUS).
        code: u32,
        /// EXCEPTION_RECORD64.ExceptionInformation (at most 15 are sent).
        parameters: Vec<u64>,
        /// DBGKM_EXCEPTION64.FirstChance.
        first_chance: bool,
    },
    /// An image loads: the target stops with a load-symbols state change.
    LoadSymbols {
        /// The processor that stops, as for [`SimEvent::Breakpoint`].
        processor: u16,
        /// DBGKD_LOAD_SYMBOLS64.BaseOfDll: where the image was mapped.
        base: u64,
        /// DBGKD_LOAD_SYMBOLS64.SizeOfImage, in bytes.
        size: u32,
        /// The image's path, sent after the state change (PathNameLength
        /// counts it).
        path: String,
    },
    /// DbgPrint: a DEBUG_IO PrintString; the target keeps running.
    Print {
        /// DBGKD_DEBUG_IO.Processor.
        processor: u16,
        /// The string printed (DBGKD_PRINT_STRING's trailing bytes).
        text: String,
    },
}

/// What the simulated target saw and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Offers (the target's "I am here" control datagrams) sent.
    pub offers_sent: u64,
    /// Debugger responses accepted, each re-keying the data channel.
    pub handshakes: u64,
    /// Break-in requests that stopped a running target.
    pub breakins: u64,
    /// Manipulate requests executed (each id once).
    pub requests_executed: u64,
    /// Requests executed a second time: must stay 0.
    pub double_executions: u64,
    /// Retransmitted requests recognised and only ACKed again.
    pub duplicate_requests: u64,
    /// RESEND packets sent: asking for a bad data packet again, or for
    /// the debugger's ACK of a reply still pending.
    pub resends_sent: u64,
    /// RESET packets received from the debugger.
    pub resets_received: u64,
    /// WriteVirtualMemory requests executed.
    pub writes: u64,
    /// Continue and Continue2 requests executed.
    pub continues: u64,
    /// Inbound datagrams that did not authenticate.
    pub dropped_bad_tag: u64,
    /// Inbound datagrams dropped for any other reason: malformed, sent by
    /// the target side, a response for another identity, or a KD packet
    /// that did not parse.
    pub dropped_other: u64,
    /// Datagrams lost to [`Faults::drop`](crate::Faults::drop), both directions.
    pub faults_dropped: u64,
    /// Datagrams delivered twice by [`Faults::duplicate`](crate::Faults::duplicate).
    pub faults_duplicated: u64,
    /// Datagrams held back by [`Faults::reorder`](crate::Faults::reorder).
    pub faults_reordered: u64,
    /// Outbound datagrams with a byte flipped by [`Faults::corrupt`](crate::Faults::corrupt).
    pub faults_corrupted: u64,
    /// Forged datagrams sent by [`Faults::forge`](crate::Faults::forge).
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
    /// Where the target is stopped (the state change's ProgramCounter);
    /// `None` while it runs.
    pub stopped_pc: Option<u64>,
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
    /// The simulated machine, memory as the session left it.
    pub machine: Machine,
    /// The workload's runtime (None when the target ran without a
    /// [`Workload`](pooldump_kit::run::Workload)).
    pub runtime: Option<Runtime>,
}
