# aligngpt_discover_tests(<target>): one CTest test per doctest TEST_CASE, like
# doctest_discover_tests() from doctest.cmake, with labels and two fixes:
#   * test cases whose names contain commas get their labels (doctest.cmake's ADD_LABELS
#     passes an unescaped --test-case filter and finds no suite for them);
#   * one run of the executable (--list-test-cases --reporters=xml) gives names and suites,
#     instead of one extra run per test case;
#   * a filter that selects no test case fails the test instead of passing silently.
#
# Test names and labels (the scheme `scripts/test` relies on):
#   CTest name = the TEST_CASE name, unchanged.
#   label <suite>  for a test case in TEST_SUITE("<suite>") or decorated * doctest::test_suite("<suite>")
#   label repro    when the name contains "repro" (any case) or the suite is "repro": bit-exact
#                  checks against tests/golden/bits.lock (and thread/run invariance).
#                  `ctest -L repro` (a superset of `ctest -R repro`) runs them.
#   label slow     when the suite is "slow" or the name contains "[slow]". Only labels count:
#                  "slow" alone in a name (e.g. "HF slow tokenizer") does NOT make a test slow.
#                  `ctest -LE slow` skips them (the sanitizer pass does).
#   label unit     on every discovered test case.
# Other labels in this tree: build (compiler/CMake behaviour, tests/build), install (tests/consumer).
set(_ALIGNGPT_DOCTEST_SCRIPT "${CMAKE_CURRENT_LIST_DIR}/aligngpt_doctest_add_tests.cmake" CACHE INTERNAL "")

function(aligngpt_discover_tests target)
  # PROPERTIES name value ...: values must not contain ';' (use ENVIRONMENT for a list of VAR=value).
  cmake_parse_arguments(ARG "" "WORKING_DIRECTORY" "PROPERTIES;ENVIRONMENT" ${ARGN})
  if(NOT ARG_WORKING_DIRECTORY)
    set(ARG_WORKING_DIRECTORY "${CMAKE_CURRENT_BINARY_DIR}")
  endif()
  set(tests_file "${CMAKE_CURRENT_BINARY_DIR}/${target}_tests.cmake")
  set(include_file "${CMAKE_CURRENT_BINARY_DIR}/${target}_include.cmake")
  # PROPERTIES travel as one string with "|" between items (they contain no "|").
  string(REPLACE ";" "|" props "${ARG_PROPERTIES}")
  string(REPLACE ";" "|" env "${ARG_ENVIRONMENT}")
  add_custom_command(TARGET ${target} POST_BUILD
    BYPRODUCTS "${tests_file}"
    COMMAND "${CMAKE_COMMAND}"
      -D "TEST_EXECUTABLE=$<TARGET_FILE:${target}>"
      -D "TEST_WORKING_DIR=${ARG_WORKING_DIRECTORY}"
      -D "TEST_PROPERTIES=${props}"
      -D "TEST_ENVIRONMENT=${env}"
      -D "CTEST_FILE=${tests_file}"
      -P "${_ALIGNGPT_DOCTEST_SCRIPT}"
    VERBATIM)
  file(WRITE "${include_file}"
    "if(EXISTS \"${tests_file}\")\n"
    "  include(\"${tests_file}\")\n"
    "else()\n"
    "  add_test(${target}_NOT_BUILT ${target}_NOT_BUILT)\n"
    "endif()\n")
  set_property(DIRECTORY APPEND PROPERTY TEST_INCLUDE_FILES "${include_file}")
endfunction()
