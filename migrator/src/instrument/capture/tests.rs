//! The capture transform on small modules: what it rewrites, what it
//! leaves, what it declines. (Running rewritten modules — unwinding,
//! rewinding, byte-identical output — is tested through real hubs in
//! `integration-tests/tests/capture.rs` and `corpus.rs`.)

use super::*;

fn wat(source: &str) -> Vec<u8> {
    wat::parse_str(source).expect("test module parses")
}

fn exports_of(bytes: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    for payload in Parser::new(0).parse_all(bytes) {
        if let Payload::ExportSection(reader) = payload.unwrap() {
            for export in reader {
                names.push(export.unwrap().name.to_owned());
            }
        }
    }
    names
}

/// A module shaped like the preemption rewrite's output: a loop calling the
/// unwinding import, a caller that keeps a value on the stack across the
/// call, an indirect call, and a leaf that cannot unwind.
const MODULE: &str = r#"
(module
  (type $leaf_t (func (param i32) (result i32)))
  (import "ferry" "__preempt" (func $preempt (result i32)))
  (memory (export "memory") 1)
  (table 2 funcref)
  (elem (i32.const 0) $leaf $looping)
  (global $countdown (mut i32) (i32.const 10))
  (func $leaf (type $leaf_t) (i32.mul (local.get 0) (i32.const 3)))
  (func $looping (type $leaf_t)
    (loop $again
      (if (i32.eqz (global.get $countdown))
        (then (global.set $countdown (call $preempt))))
      (local.set 0 (i32.sub (local.get 0) (i32.const 1)))
      (br_if $again (local.get 0)))
    (local.get 0))
  (func $caller (param i32) (result i32)
    (i32.add
      (local.get 0)
      (block (result i32)
        (call $looping (i32.const 5))))
    (call_indirect (type $leaf_t) (i32.const 1)))
  (func (export "_start")
    (drop (call $caller (i32.const 7)))
    (drop (call $leaf (i32.const 2)))))
"#;

#[test]
fn rewritten_module_validates_and_speaks_the_asyncify_abi() {
    let Transformed {
        main: bytes,
        rewind,
        stats,
    } = apply(&wat(MODULE)).unwrap();
    wasmparser::Validator::new().validate_all(&rewind).unwrap();
    wasmparser::Validator::new().validate_all(&bytes).unwrap();
    let exports = exports_of(&bytes);
    for name in [
        STACK_MEMORY_EXPORT,
        "asyncify_start_unwind",
        "asyncify_stop_unwind",
        "asyncify_start_rewind",
        "asyncify_stop_rewind",
    ] {
        assert!(exports.contains(&name.to_owned()), "{name} missing from {exports:?}");
    }
    // $looping (the preempt call), $caller (its call and the indirect call,
    // which may reach $looping through the table) and _start (the call of
    // $caller); $leaf and _start's call of it are left alone.
    assert_eq!(
        stats,
        CaptureStats {
            functions: 3,
            resume_points: 4
        }
    );
}

#[test]
fn indirect_calls_of_a_type_no_unwinding_function_has_are_not_resume_points() {
    let module = r#"
    (module
      (type $binary (func (param i32 i32) (result i32)))
      (type $unary (func (param i32) (result i32)))
      (import "ferry" "__preempt" (func $preempt (result i32)))
      (memory (export "memory") 1)
      (table 2 funcref)
      (elem (i32.const 0) $add $spin)
      (func $add (type $binary) (i32.add (local.get 0) (local.get 1)))
      (func $spin (type $unary) (drop (call $preempt)) (local.get 0))
      (func (export "_start")
        (drop (call_indirect (type $binary) (i32.const 1) (i32.const 2) (i32.const 0)))))
    "#;
    let Transformed { main: bytes, stats, .. } = apply(&wat(module)).unwrap();
    wasmparser::Validator::new().validate_all(&bytes).unwrap();
    // Only $spin: _start calls through type $binary, which $spin is not.
    assert_eq!(
        stats,
        CaptureStats {
            functions: 1,
            resume_points: 1
        }
    );
}

#[test]
fn exception_handling_is_declined_for_the_fallback() {
    let module = r#"
    (module
      (import "ferry" "__preempt" (func $preempt (result i32)))
      (memory (export "memory") 1)
      (tag $oops)
      (func (export "_start")
        (block $caught
          (try_table (catch_all $caught)
            (drop (call $preempt))))))
    "#;
    let error = apply(&wat(module)).unwrap_err();
    assert!(error.0.contains("exception"), "{error}");
}

#[test]
fn a_block_with_parameters_at_a_resume_point_is_declined() {
    let module = r#"
    (module
      (type $takes (func (param i32) (result i32)))
      (import "ferry" "__preempt" (func $preempt (result i32)))
      (memory (export "memory") 1)
      (func (export "_start")
        i32.const 1
        block (type $takes)
          drop
          call $preempt
        end
        drop))
    "#;
    let error = apply(&wat(module)).unwrap_err();
    assert!(error.0.contains("parameters"), "{error}");
}

#[test]
fn sections_the_module_lacks_are_added_in_their_place() {
    // No global, export or table section: the rewrite adds the first two
    // between the memory and code sections.
    let module = r#"
    (module
      (import "ferry" "__preempt" (func $preempt (result i32)))
      (memory 1)
      (func $spin (drop (call $preempt))))
    "#;
    let Transformed { main: bytes, stats, .. } = apply(&wat(module)).unwrap();
    wasmparser::Validator::new().validate_all(&bytes).unwrap();
    assert!(exports_of(&bytes).contains(&"asyncify_start_rewind".to_owned()));
    assert_eq!(
        stats,
        CaptureStats {
            functions: 1,
            resume_points: 1
        }
    );
}
