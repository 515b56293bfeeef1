//! `MockSpace`: an in-process server that behaves like a SignalWire space.
