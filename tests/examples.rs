//! The runnable examples under templates-examples/ render to their expected output.
