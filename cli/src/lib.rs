//! The `selfheal` binary's library: local engine assembly, the emulated stack, the demo and the
//! verbs. The simulators it runs the demo against are `selfheal_testkit`'s.

/// `println!` for the verbs: a closed pipe ends the process quietly instead of panicking.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::operator::say(format_args!($($arg)*))
    };
}

pub mod commands;
pub mod demo;
pub mod demo_deployed;
pub mod local;
pub mod operator;
pub mod report;
pub mod server;
pub mod stack;
pub mod stats;
