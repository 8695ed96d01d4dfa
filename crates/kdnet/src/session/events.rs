//! What a session reports and is told: where the target stopped
//! ([`StopInfo`]), what a running target reported ([`TargetEvent`]), how
//! to continue ([`ContinueStatus`]), whether it runs ([`TargetState`]),
//! and what a reconnect or leaving it running did.

use crate::api::{ControlReport, Event, StateChange, status};

/// Where the target stopped, from its state change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopInfo {
    /// The CPU that reported the stop; requests go to it.
    pub processor: u16,
    /// DBGKD_WAIT_STATE_CHANGE64.NumberProcessors: the target's CPU count.
    pub number_processors: u32,
    /// The KTHREAD running on that CPU.
    pub thread: u64,
    /// DBGKD_WAIT_STATE_CHANGE64.ProgramCounter: where it stopped (the
    /// `int3`'s address for a breakpoint).
    pub pc: u64,
    /// Why it stopped: the exception (code, address, first chance,
    /// parameters) or the image whose symbols to load.
    pub event: Event,
    /// The AMD64 control report: Dr6/Dr7, EFlags, CS, and up to 16
    /// instruction bytes at the PC.
    pub report: ControlReport,
}

impl From<&StateChange> for StopInfo {
    fn from(s: &StateChange) -> Self {
        Self {
            processor: s.processor,
            number_processors: s.number_processors,
            thread: s.thread,
            pc: s.program_counter,
            event: s.event(),
            report: s.control_report(),
        }
    }
}

impl StopInfo {
    /// A breakpoint exception (`int3`, `__debugbreak`, a break-in,
    /// PoolHitTag's break): STATUS_BREAKPOINT.
    pub fn is_breakpoint(&self) -> bool {
        matches!(
            self.event,
            Event::Exception {
                code: status::BREAKPOINT,
                ..
            }
        )
    }
}

/// What a running target reported on its own ([`LiveTarget::wait_event`]).
///
/// [`LiveTarget::wait_event`]: crate::LiveTarget::wait_event
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetEvent {
    /// The target stopped: an exception (a breakpoint such as
    /// PoolHitTag's, an assertion, a fault) or a load-symbols
    /// notification. It stays stopped until
    /// [`LiveTarget::continue_with`] or [`LiveTarget::resume`]; memory
    /// and registers can be read meanwhile.
    ///
    /// [`LiveTarget::continue_with`]: crate::LiveTarget::continue_with
    /// [`LiveTarget::resume`]: crate::LiveTarget::resume
    Stopped(StopInfo),
    /// DbgPrint output (DEBUG_IO PrintString). The target keeps running.
    Print {
        /// DBGKD_DEBUG_IO.Processor: the CPU that printed.
        processor: u16,
        /// The string printed (lossy UTF-8).
        text: String,
    },
    /// A DbgPrompt (DEBUG_IO GetString). pooldump answered it with an
    /// empty line, so the target keeps running.
    Prompt {
        /// DBGKD_DEBUG_IO.Processor: the CPU that prompted.
        processor: u16,
        /// The prompt string (lossy UTF-8).
        text: String,
    },
}

/// How to continue from a stop (DBGKD_CONTINUE2's status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContinueStatus {
    /// DBG_CONTINUE (0x00010002): carry on, as WinDbg's `g`.
    Continue,
    /// DBG_EXCEPTION_HANDLED (0x00010001): `gh`.
    ExceptionHandled,
    /// DBG_EXCEPTION_NOT_HANDLED (0x80010001): `gn`, the kernel dispatches
    /// the exception (for a breakpoint nobody handles: a bug check).
    ExceptionNotHandled,
}

impl ContinueStatus {
    /// The NTSTATUS sent as DBGKD_CONTINUE2.ContinueStatus.
    pub fn code(self) -> u32 {
        match self {
            ContinueStatus::Continue => status::DBG_CONTINUE,
            ContinueStatus::ExceptionHandled => status::DBG_EXCEPTION_HANDLED,
            ContinueStatus::ExceptionNotHandled => status::DBG_EXCEPTION_NOT_HANDLED,
        }
    }
}

/// The result of [`LiveTarget::reconnect`].
///
/// [`LiveTarget::reconnect`]: crate::LiveTarget::reconnect
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconnected {
    /// Where the target is stopped now.
    pub stop: StopInfo,
    /// The target rebooted in between (a new boot identity in its offer,
    /// or a new KernBase): everything written to its memory before is
    /// gone, and addresses from the old boot no longer apply.
    pub rebooted: bool,
}

/// What [`LiveTarget::leave_running`] found and did.
///
/// [`LiveTarget::leave_running`]: crate::LiveTarget::leave_running
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeftRunning {
    /// The target was running already.
    WasRunning,
    /// It was stopped and has been resumed.
    Resumed,
    /// The link had been lost; it was re-established and the target
    /// resumed.
    Reconnected {
        /// The target had rebooted meanwhile, as [`Reconnected::rebooted`].
        rebooted: bool,
    },
    /// The target rebooted during the session: it runs (a new boot).
    Rebooted,
}

/// Whether the target runs, and where it stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetState {
    /// Stopped in the debugger, where its state change said.
    Stopped(StopInfo),
    /// Running (resumed, or never broken into).
    Running,
    /// The session failed; [`LiveTarget::reconnect`] may bring it back.
    ///
    /// [`LiveTarget::reconnect`]: crate::LiveTarget::reconnect
    Dead(String),
}
