# modgate_add_module(NAME SOURCES... [LIBRARIES libs...])
#
# Declares a module: its sources become an object library whose MG_MODULE
# registration ends up in every gateway executable made with
# modgate_add_gateway() (or, in the modgate tree, in build/bin/modgate).
function(modgate_add_module name)
  cmake_parse_arguments(M "" "" "SOURCES;LIBRARIES" ${ARGN})
  set(sources ${M_SOURCES} ${M_UNPARSED_ARGUMENTS})
  add_library(modgate_module_${name} OBJECT ${sources})
  if(TARGET modgate_sdk)
    target_link_libraries(modgate_module_${name} PUBLIC modgate_sdk ${M_LIBRARIES})
  else()
    target_link_libraries(modgate_module_${name} PUBLIC modgate::sdk ${M_LIBRARIES})
  endif()
  set_property(GLOBAL APPEND PROPERTY MODGATE_MODULES modgate_module_${name})
endfunction()

# modgate_add_gateway(TARGET [MODULES names...] [SOURCES...])
#
# An executable that runs the gateway with the given modules (default:
# every module declared so far). Without sources it gets the stock main();
# with sources, one of them defines main() and calls mg_gateway_main().
function(modgate_add_gateway target)
  cmake_parse_arguments(G "" "" "MODULES;SOURCES" ${ARGN})
  set(sources ${G_SOURCES} ${G_UNPARSED_ARGUMENTS})
  if(G_MODULES)
    set(mods)
    foreach(m ${G_MODULES})
      list(APPEND mods modgate_module_${m})
    endforeach()
  else()
    get_property(mods GLOBAL PROPERTY MODGATE_MODULES)
  endif()
  if(sources)
    add_executable(${target} ${sources})
  else()
    set(main_c ${CMAKE_CURRENT_BINARY_DIR}/${target}_main.c)
    file(WRITE ${main_c}
      "#include <modgate/gateway.h>\nint main(int argc, char **argv) { return mg_gateway_main(argc, argv); }\n")
    add_executable(${target} ${main_c})
  endif()
  if(TARGET modgate_gateway)
    target_link_libraries(${target} PRIVATE modgate_gateway ${mods})
  else()
    target_link_libraries(${target} PRIVATE modgate::gateway ${mods})
  endif()

  # TARGET-module: the same modules without the gateway (so without
  # libcurl), which the gateway runs for its children when it finds it
  # beside itself: a smaller, faster-starting process per module.
  set(runner_c ${CMAKE_CURRENT_BINARY_DIR}/${target}_module_main.c)
  file(WRITE ${runner_c}
    "#include <modgate/module.h>\nint main(int argc, char **argv) { return mg_module_main(argc, argv); }\n")
  add_executable(${target}-module ${runner_c})
  if(TARGET modgate_sdk)
    target_link_libraries(${target}-module PRIVATE modgate_sdk ${mods})
  else()
    target_link_libraries(${target}-module PRIVATE modgate::sdk ${mods})
  endif()
  add_dependencies(${target} ${target}-module)
endfunction()
