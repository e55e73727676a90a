# cmake -P script run by the install.consumer test; see CMakeLists.txt next to it.
function(step what)
  message(STATUS "[install.consumer] ${what}: ${ARGN}")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "[install.consumer] ${what} failed (${rc})")
  endif()
endfunction()

set(prefix ${WORK_DIR}/prefix)
file(REMOVE_RECURSE ${WORK_DIR})
step("install" ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix})
foreach(f include/aligngpt/config.h include/aligngpt/version.h share/cmake/aligngpt/aligngptConfig.cmake
          share/cmake/aligngpt/aligngptConfigVersion.cmake share/pkgconfig/aligngpt.pc)
  if(NOT EXISTS ${prefix}/${f})
    message(FATAL_ERROR "[install.consumer] ${f} was not installed")
  endif()
endforeach()

# The version (project(VERSION) of the tree under test) is in the .pc files as installed.
foreach(pc aligngpt aligngpt-openmp aligngpt-tokenizer)
  if(EXISTS ${prefix}/share/pkgconfig/${pc}.pc)
    file(STRINGS ${prefix}/share/pkgconfig/${pc}.pc pc_version REGEX "^Version: ")
    if(NOT pc_version STREQUAL "Version: ${VERSION}")
      message(FATAL_ERROR "[install.consumer] ${pc}.pc says '${pc_version}', expected 'Version: ${VERSION}'")
    endif()
  endif()
endforeach()

set(common -G ${GENERATOR} -DCMAKE_CXX_COMPILER=${CXX} -DCMAKE_BUILD_TYPE=Release -DEXPECT_OPENMP=${WITH_OPENMP}
    -DEXPECT_VERSION=${VERSION})

step("configure find_package consumer" ${CMAKE_COMMAND} -S ${SOURCE_DIR}/tests/consumer/find_package
     -B ${WORK_DIR}/find_package ${common} -DCMAKE_PREFIX_PATH=${prefix})
step("build find_package consumer" ${CMAKE_COMMAND} --build ${WORK_DIR}/find_package)
step("run find_package consumer" ${WORK_DIR}/find_package/consumer)

step("configure add_subdirectory consumer" ${CMAKE_COMMAND} -S ${SOURCE_DIR}/tests/consumer/subdirectory
     -B ${WORK_DIR}/subdirectory ${common} -DALIGNGPT_SOURCE_DIR=${SOURCE_DIR}
     -DALIGNGPT_WITH_OPENMP=${WITH_OPENMP})
step("build add_subdirectory consumer" ${CMAKE_COMMAND} --build ${WORK_DIR}/subdirectory)
step("run add_subdirectory consumer" ${WORK_DIR}/subdirectory/consumer)

if(WITH_OPENMP)
  find_program(MAKE_PROGRAM NAMES make gmake)
  find_program(PKG_CONFIG_PROGRAM NAMES pkg-config pkgconf)
  if(MAKE_PROGRAM AND PKG_CONFIG_PROGRAM)
    file(MAKE_DIRECTORY ${WORK_DIR}/pkg-config)
    execute_process(COMMAND ${CMAKE_COMMAND} -E env PKG_CONFIG_PATH=${prefix}/share/pkgconfig
                    ${PKG_CONFIG_PROGRAM} --modversion aligngpt aligngpt-openmp
                    OUTPUT_VARIABLE modversion OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE rc)
    if(NOT rc EQUAL 0 OR NOT modversion STREQUAL "${VERSION}\n${VERSION}")
      message(FATAL_ERROR "[install.consumer] pkg-config --modversion: '${modversion}' (${rc}), expected ${VERSION}")
    endif()
    step("pkg-config accepts aligngpt >= ${VERSION}" ${CMAKE_COMMAND} -E env PKG_CONFIG_PATH=${prefix}/share/pkgconfig
         ${PKG_CONFIG_PROGRAM} --exists "aligngpt >= ${VERSION}" "aligngpt < 9.0")
    execute_process(COMMAND ${CMAKE_COMMAND} -E env PKG_CONFIG_PATH=${prefix}/share/pkgconfig
                    ${PKG_CONFIG_PROGRAM} --exists "aligngpt >= 9.0" RESULT_VARIABLE rc)
    if(rc EQUAL 0)
      message(FATAL_ERROR "[install.consumer] pkg-config --exists 'aligngpt >= 9.0' must fail")
    endif()
    step("build pkg-config consumer" ${CMAKE_COMMAND} -E env PKG_CONFIG_PATH=${prefix}/share/pkgconfig
         ${MAKE_PROGRAM} --no-print-directory -f ${SOURCE_DIR}/tests/consumer/Makefile
         CXX=${CXX} OUT=${WORK_DIR}/pkg-config)
    step("run pkg-config consumer" ${WORK_DIR}/pkg-config/consumer)
  else()
    message(WARNING "[install.consumer] make or pkg-config missing: pkg-config consumer skipped")
  endif()
endif()
if(WITH_TOKENIZER)
  step("configure tokenizer consumer" ${CMAKE_COMMAND} -S ${SOURCE_DIR}/tests/consumer/tokenizer
       -B ${WORK_DIR}/tokenizer ${common} -DCMAKE_PREFIX_PATH=${prefix}
       -DTOKENIZER_DIR=${SOURCE_DIR}/tests/golden/tokenizer)
  step("build tokenizer consumer" ${CMAKE_COMMAND} --build ${WORK_DIR}/tokenizer)
  step("run tokenizer consumer" ${WORK_DIR}/tokenizer/consumer_tokenizer)
  if(NOT EXISTS ${prefix}/share/pkgconfig/aligngpt-tokenizer.pc)
    message(FATAL_ERROR "[install.consumer] aligngpt-tokenizer.pc was not installed")
  endif()
endif()
message(STATUS "[install.consumer] all consumers built and ran")
