//! The tests that start a whole emulated stack (`selfheal stack`: nine function processes, moto
//! with IAM, the Step Functions API) or a demo harness in both shapes. A binary of their own, so
//! they never share the machine's two cores with the suite's load tests (a thousand deliveries
//! against the shared moto), which then time out for reasons of ours, not of the code.

mod acknowledgements;
mod deployed_shape;
