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
fn a_segment_instruction_in_a_function_that_may_unwind_is_declined() {
    // The rewind module could not name the main module's data segment.
    let module = r#"
    (module
      (import "ferry" "__preempt" (func $preempt (result i32)))
      (memory (export "memory") 1)
      (data $bytes "abc")
      (func (export "_start")
        (memory.init $bytes (i32.const 0) (i32.const 0) (i32.const 3))
        (drop (call $preempt))))
    "#;
    let error = apply(&wat(module)).unwrap_err();
    assert!(error.0.contains("segment"), "{error}");
}

#[test]
fn the_rewind_module_imports_every_entity_of_the_main_module_and_fills_the_twins_table() {
    let Transformed { main, rewind, .. } = apply(&wat(MODULE)).unwrap();
    let count_exports = |prefix: &str| {
        let mut count = 0;
        for payload in Parser::new(0).parse_all(&main) {
            if let Payload::ExportSection(reader) = payload.unwrap() {
                for export in reader {
                    count += usize::from(export.unwrap().name.starts_with(prefix));
                }
            }
        }
        count
    };
    let (mut imports, mut elements) = (0, 0);
    for payload in Parser::new(0).parse_all(&rewind) {
        match payload.unwrap() {
            Payload::ImportSection(reader) => {
                for import in reader.into_imports() {
                    let import = import.unwrap();
                    assert_eq!(import.module, REWIND_IMPORT_MODULE);
                    imports += 1;
                }
            }
            Payload::ElementSection(reader) => elements += reader.count(),
            _ => {}
        }
    }
    assert_eq!(imports, count_exports(REWIND_EXPORT_PREFIX));
    assert_eq!(elements, 1, "one active segment writes the twins");
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

/// Many functions, each keeping a different mix of values on the stack
/// across an unwinding call: each needs a multi-value block type of its
/// own in its rewind body.
fn many_stack_shapes() -> String {
    let types = ["i32", "i64", "f32", "f64"];
    let mut functions = String::new();
    let mut calls = String::new();
    for index in 0..96 {
        let shape = [types[index % 4], types[(index / 4) % 4], types[(index / 16) % 4]];
        let kept = if index % 2 == 0 { &shape[..2] } else { &shape[..] };
        let pushes: String = kept.iter().map(|ty| format!("({ty}.const 1) ")).collect();
        let drops = "drop ".repeat(kept.len());
        functions.push_str(&format!("(func $f{index} {pushes} (drop (call $preempt)) {drops})\n"));
        calls.push_str(&format!("(call $f{index})\n"));
    }
    format!(
        r#"(module
          (import "ferry" "__preempt" (func $preempt (result i32)))
          (memory (export "memory") 1)
          {functions}
          (func (export "_start") {calls}))"#
    )
}

#[test]
fn the_rewrite_on_one_thread_and_on_four_gives_the_same_modules() {
    let wasm = wat(&many_stack_shapes());
    let on = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| apply(&wasm).unwrap())
    };
    let one = on(1);
    wasmparser::Validator::new().validate_all(&one.main).unwrap();
    assert_eq!(one.stats.functions, 97);
    for _ in 0..3 {
        let four = on(4);
        assert_eq!(four.main, one.main, "main module differs");
        assert_eq!(four.rewind, one.rewind, "rewind module differs");
    }
}
