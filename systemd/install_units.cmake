# Runs at install time (see CMakeLists.txt): CMAKE_INSTALL_PREFIX is the prefix of this install.
set(prefix "${CMAKE_INSTALL_PREFIX}")
set(BKP_BIN_DIR "${prefix}/bin")
set(BKP_DOC_DIR "${prefix}/share/doc/backupfs")
if(prefix STREQUAL "/usr")
  set(conf_dir "/etc/backupfs")
else()
  set(conf_dir "${prefix}/etc/backupfs")
endif()
set(root "$ENV{DESTDIR}")
foreach(unit backupd.service backupfs@.service replicator.service)
  message(STATUS "Installing: ${root}${prefix}/lib/systemd/system/${unit}")
  configure_file("${BKP_SYSTEMD_SOURCE_DIR}/${unit}.in"
                 "${root}${prefix}/lib/systemd/system/${unit}" @ONLY)
endforeach()
message(STATUS "Installing: ${root}${prefix}/lib/sysusers.d/backupfs.conf")
configure_file("${BKP_SYSTEMD_SOURCE_DIR}/backupfs-sysusers.conf"
               "${root}${prefix}/lib/sysusers.d/backupfs.conf" COPYONLY)
if(NOT EXISTS "${root}${conf_dir}/backupd.toml")  # never overwrite an operator's settings
  message(STATUS "Installing: ${root}${conf_dir}/backupd.toml")
  configure_file("${BKP_SYSTEMD_SOURCE_DIR}/backupd.toml" "${root}${conf_dir}/backupd.toml" COPYONLY)
endif()
