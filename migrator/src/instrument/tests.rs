use super::*;

fn wat(source: &str) -> Vec<u8> {
    wat::parse_str(source).expect("test module parses")
}

fn imports_of(bytes: &[u8]) -> Vec<(String, String)> {
    let module = walrus::Module::from_buffer(bytes).expect("instrumented module parses");
    module
        .imports
        .iter()
        .map(|import| (import.module.clone(), import.name.clone()))
        .collect()
}

const LOOP_AND_GROW: &str = r#"
(module
  (memory (export "memory") 1)
  (func $spin (param $n i32)
    (loop $again
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      (br_if $again (local.get $n))))
  (func $nested (param $n i32) (result i32)
    (block $out
      (loop $outer
        (loop $inner
          (br_if $out (i32.eqz (local.get $n)))
          (local.set $n (i32.sub (local.get $n) (i32.const 1)))
          (br_if $inner (i32.and (local.get $n) (i32.const 1))))
        (br $outer)))
    (memory.grow (i32.const 1)))
  (func (export "_start")
    (call $spin (i32.const 10))
    (drop (call $nested (i32.const 10)))))
"#;

#[test]
fn instrumented_module_validates_and_counts_every_point() {
    let instrumented = instrument(&wat(LOOP_AND_GROW)).unwrap();
    wasmparser::Validator::new().validate_all(&instrumented.bytes).unwrap();
    assert_eq!(
        instrumented.stats,
        InstrumentStats {
            functions: 0,
            loops: 3,
            memory_grows: 1,
            // $spin, $nested and _start: a preemption point in each of the
            // three loops, and _start's two calls of them.
            capture: Some(CaptureStats {
                functions: 3,
                resume_points: 5
            }),
        }
    );
}

#[test]
fn rewrite_adds_the_two_host_hooks_as_imports() {
    let instrumented = instrument(&wat(LOOP_AND_GROW)).unwrap();
    let imports = imports_of(&instrumented.bytes);
    assert!(imports.contains(&(RESERVED_IMPORT_MODULE.to_owned(), PREEMPT_IMPORT.to_owned())));
    assert!(imports.contains(&(RESERVED_IMPORT_MODULE.to_owned(), MEMORY_GROW_IMPORT.to_owned())));
}

#[test]
fn no_memory_grow_instruction_survives_on_the_default_memory() {
    let instrumented = instrument(&wat(LOOP_AND_GROW)).unwrap();
    let mut grows = 0;
    for payload in wasmparser::Parser::new(0).parse_all(&instrumented.bytes) {
        if let wasmparser::Payload::CodeSectionEntry(body) = payload.unwrap() {
            let mut reader = body.get_operators_reader().unwrap();
            while !reader.eof() {
                if matches!(reader.read().unwrap(), wasmparser::Operator::MemoryGrow { .. }) {
                    grows += 1;
                }
            }
        }
    }
    assert_eq!(grows, 0);
}

#[test]
fn bytes_that_are_not_wasm_are_refused_with_the_parser_reason() {
    let error = instrument(b"this is not a wasm module\n").unwrap_err();
    assert!(matches!(error, InstrumentError::InvalidModule { .. }), "{error}");
    assert!(error.to_string().contains("magic"), "{error}");
}

#[test]
fn a_module_that_already_imports_a_reserved_hook_is_refused() {
    let module = wat(r#"(module (import "ferry" "__preempt" (func (result i32))) (memory 1))"#);
    let error = instrument(&module).unwrap_err();
    assert!(matches!(error, InstrumentError::ReservedImport { .. }), "{error}");
}

#[test]
fn a_module_without_memory_is_refused() {
    let error = instrument(&wat("(module (func))")).unwrap_err();
    assert!(matches!(error, InstrumentError::NoMemory), "{error}");
}

#[test]
fn capture_exports_are_present_after_the_rewrite() {
    let module = wat(r#"
(module
  (import "ferry" "sleep_ms" (func $sleep (param i64)))
  (memory (export "memory") 1)
  (global $counter (mut i32) (i32.const 0))
  (global $constant i32 (i32.const 7))
  (func (export "_start")
    (global.set $counter (i32.add (global.get $counter) (global.get $constant)))
    (call $sleep (i64.const 1))))
"#);
    let instrumented = instrument(&module).unwrap();
    wasmparser::Validator::new().validate_all(&instrumented.bytes).unwrap();
    let parsed = walrus::Module::from_buffer(&instrumented.bytes).unwrap();
    let exports: Vec<&str> = parsed.exports.iter().map(|export| export.name.as_str()).collect();
    for name in [
        "_start",
        "memory",
        STACK_MEMORY_EXPORT,
        "asyncify_start_unwind",
        "asyncify_stop_unwind",
        "asyncify_start_rewind",
        "asyncify_stop_rewind",
        "__ferry_global_0",
    ] {
        assert!(exports.contains(&name), "{name} missing from {exports:?}");
    }
    assert!(
        !exports.iter().any(|name| name == &"__ferry_global_1"),
        "immutable globals are not exported: {exports:?}"
    );
}

#[test]
fn a_module_with_a_start_section_is_refused() {
    let module = wat(r#"(module (memory 1) (func $init) (start $init))"#);
    assert!(matches!(
        instrument(&module).unwrap_err(),
        InstrumentError::StartSection
    ));
}

#[test]
fn entry_checks_go_exactly_to_functions_on_a_call_cycle() {
    let module = wat(r#"
(module
  (type $unary (func (param i32) (result i32)))
  (memory (export "memory") 1)
  (table 2 funcref)
  (elem (i32.const 0) $through_table $leaf)
  ;; calls itself: needs an entry check
  (func $self (param i32) (result i32)
    (if (result i32) (local.get 0)
      (then (call $self (i32.sub (local.get 0) (i32.const 1))))
      (else (i32.const 0))))
  ;; $ping <-> $pong: both need one
  (func $ping (param i32) (result i32) (call $pong (local.get 0)))
  (func $pong (param i32) (result i32)
    (if (result i32) (local.get 0)
      (then (call $ping (i32.sub (local.get 0) (i32.const 1))))
      (else (i32.const 0))))
  ;; recursion through the table: it calls indirectly, and it is in the table
  (func $through_table (param i32) (result i32)
    (call_indirect (type $unary) (local.get 0) (i32.const 0)))
  ;; a leaf: no entry check
  (func $leaf (param i32) (result i32) (i32.add (local.get 0) (i32.const 1)))
  (func (export "_start")
    (drop (call $self (i32.const 3)))
    (drop (call $ping (i32.const 3)))
    (drop (call $leaf (i32.const 3)))))
"#);
    let instrumented = instrument(&module).unwrap();
    assert_eq!(instrumented.stats.functions, 4, "{:?}", instrumented.stats);
}
