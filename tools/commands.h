// bkptool's commands: from parsed arguments to a validated Request, and from the Response to
// what the user sees. Building and presenting are pure functions (unit-tested); run() adds the
// connection in between.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "tools/failure.h"
#include "tools/json.h"
#include "tools/settings.h"

namespace bkp::tools {

// The command line after parsing, as typed (validation happens in make_request).
struct Invocation {
  // register, unregister, list, history, snapshots, restore, status, set, run, verify,
  // replica_add, replica_remove, replica_list, operator_add, operator_remove, operator_list
  std::string command;
  std::string host;  // HOST (a volume's name, or its node's address); register: ADDRESS
  std::string port;
  std::string path;
  std::string every;                // register
  std::string node_id;              // register --node-id
  std::string copies;               // register and set --copies
  std::string limit = "0";          // history
  bool purge = false;               // unregister
  std::string snapshot = "latest";  // restore
  std::string to;                   // restore
  bool force = false;               // restore
  std::string from;                 // restore --from: [ID@]ADDR:PORT,...
  bool live = false;                // restore --live
  bool watch = false;               // status
  std::string count = "0";          // status --watch
  std::string interval = "1";       // status --watch
  std::string id;                   // replica/operator add and remove: an identity
  std::string name;                 // replica/operator add --name
  bool snapshots = false;           // verify --snapshots
  bool replicas = false;            // verify --replicas
  bool read_data = false;           // verify --read-data
};

// What a finished command shows.
struct Report {
  Json json;                          // --json: the one document printed on stdout
  std::string table;                  // otherwise: printed on stdout ("" = nothing)
  std::vector<std::string> messages;  // otherwise: lines for stderr (confirmations)
  std::vector<std::string> warnings;  // stderr in both modes unless -q
  Exit exit = Exit::kOk;              // the exit status once printed (status: under-replicated)
};

// The validated Request for inv, or a usage Failure (exit 2) naming the bad value.
Outcome<Json> make_request(const Invocation& inv);

// The Report for a successful response (not for restore, which reports what it extracted; a
// status response is presented as a single, non-watch redraw). A failed run exits 1.
Report present(const Invocation& inv, const Json& request, const Json& response);

// Checks the restore target before anything is sent: a usage Failure if it is not a
// directory, or is non-empty and --force was not given.
Outcome<void> check_restore_target(const Invocation& inv);

// Where a command's Reports go (cli.cc prints them). Every command reports once on success,
// except `status --watch`, which reports once per redraw.
using ReportSink = std::function<void(const Report&)>;

// Validates, connects to server, runs the command and hands its Report(s) to sink.
Outcome<void> run(const Invocation& inv, const ServerAddress& server, const ReportSink& sink);

}  // namespace bkp::tools
