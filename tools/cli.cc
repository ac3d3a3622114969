// The command line and the output contract of bkptool.
//
// Output contract: with --json exactly one JSON document goes to stdout, success or failure
// (status --watch: one per redraw, then at most one failure), so `bkptool --json list | jq`
// never sees a partial or mixed stream; without it, tables go to stdout and every message
// (confirmations, warnings, errors) to stderr, so piping a table into another tool never
// captures chatter. Exit codes follow docs/PROTOCOL.md.
//
// `bkptool --show-id` and `bkptool --version` are the invocations without a command: the first
// prints bkptool's identity (making it on first use), which is what an operator sends to the
// server's admin.
//
// CLI11 reports parse errors by throwing; they are caught right here and become usage
// failures (exit 2) like any other invalid value, never CLI11's own exit codes. --json is
// found by scanning argv first, because a parse error can happen before CLI11 reaches it. A
// word where a command belongs that names none gets the nearest command suggested
// (tools/suggest.h), also for the verbs of `replica` and `operator`.
#include "tools/cli.h"

#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <string_view>

#include "common/log.h"
#include "common/version.h"
#include "tools/client.h"
#include "tools/commands.h"
#include "tools/settings.h"
#include "tools/suggest.h"

namespace bkp::tools {
namespace {

struct Globals {
  std::string server;
  std::string server_id;
  std::string identity;
  bool no_tls = false;
  bool show_id = false;
  bool json = false;
  bool verbose = false;
  bool quiet = false;
};

bool wants_json(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--") break;
    if (arg == "--json") return true;
  }
  return false;
}

void print_json(const Json& doc) {
  std::string text = doc.dump(2, ' ', false, Json::error_handler_t::replace);
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fputc('\n', stdout);
}

int report_failure(const Failure& f, bool json) {
  std::fprintf(stderr, "bkptool: %s\n", f.message.c_str());
  if (json) print_json(Json{{"ok", false}, {"code", f.code}, {"error", f.message}});
  return exit_status(f.exit);
}

// Prints one Report; flushed at once, so a watch piped into another program shows each redraw
// when it happens.
void report_success(const Report& r, const Globals& g) {
  if (g.json) {
    print_json(r.json);
  } else {
    std::fwrite(r.table.data(), 1, r.table.size(), stdout);
  }
  std::fflush(stdout);
  if (!g.json && !g.quiet) {
    for (const auto& m : r.messages) std::fprintf(stderr, "%s\n", m.c_str());
  }
  if (!g.quiet) {
    for (const auto& w : r.warnings) std::fprintf(stderr, "bkptool: warning: %s\n", w.c_str());
  }
}

void add_volume_args(CLI::App* cmd, Invocation& inv) {
  cmd->add_option("HOST", inv.host,
                  "the volume's name: its node's host name (or the node's address, if that "
                  "designates one volume)")
      ->required()
      ->type_name("");
  cmd->add_option("PATH", inv.path, "absolute path of the volume on the node")
      ->required()
      ->type_name("");
}

// `replica add|remove|list` and `operator add|remove|list`: inv.command becomes "replica_add"...
void declare_peer_commands(CLI::App& app, Invocation& inv, const char* kind, const char* help) {
  CLI::App* group = app.add_subcommand(kind, help);
  group->group("Commands");
  group->fallthrough();
  group->require_subcommand(1);
  auto verb = [&, kind](const char* name, const char* what) {
    CLI::App* cmd = group->add_subcommand(name, what);
    cmd->fallthrough();
    cmd->callback([&inv, kind, name] { inv.command = std::string(kind) + "_" + name; });
    return cmd;
  };
  CLI::App* add = verb("add", "authorise an identity (it takes effect for its next connection)");
  add->add_option("ID", inv.id, "the identity, as its --show-id prints it")->required()->type_name("");
  add->add_option("--name", inv.name, "a label for people (at most 64 characters)")->type_name("NAME");
  CLI::App* remove = verb("remove", "revoke an identity and close its open sessions");
  remove->add_option("ID", inv.id, "the identity")->required()->type_name("");
  verb("list", std::string(kind) == "replica"
                   ? "authorised replicas, and the refused ones waiting for authorisation"
                   : "authorised operators");
}

// Declares every command; inv.command is set by whichever callback runs.
void declare_commands(CLI::App& app, Invocation& inv) {
  auto sub = [&](const char* name, const char* help) {
    CLI::App* cmd = app.add_subcommand(name, help);
    cmd->group("Commands");
    cmd->fallthrough();  // global options may follow the command
    cmd->callback([&inv, name] { inv.command = name; });
    return cmd;
  };
  CLI::App* reg = sub("register", "register a node's volume and start backing it up");
  reg->add_option("ADDRESS", inv.host,
                  "host name or address where backupd reaches the node (the volume is named by "
                  "the node's own host name)")
      ->required()
      ->type_name("");
  reg->add_option("PORT", inv.port, "the node's listening port (1-65535)")
      ->required()
      ->type_name("");
  reg->add_option("PATH", inv.path, "absolute path the node serves")->required()->type_name("");
  reg->add_option("--every", inv.every,
                  "how often to snapshot: a number with a unit, s, m, h or d (30s, 15m, 2h, "
                  "1d), at most 365 days; a bare number is minutes (5 = 5m)")
      ->required()
      ->type_name("PERIOD");
  reg->add_option("--copies", inv.copies,
                  "copies to keep, the mirror on backupd included (1-16; default: backupd's "
                  "`copies`, 3 = the mirror and 2 replicas)")
      ->type_name("N");
  reg->add_option("--node-id", inv.node_id,
                  "the identity the node must present (`backupfs --show-id` on the node prints "
                  "it); without it, the identity the node presents now is pinned")
      ->type_name("ID");

  CLI::App* unreg = sub("unregister", "stop backing up a volume (snapshots and history are kept; "
                                      "replicas keep their copies, closed)");
  add_volume_args(unreg, inv);
  unreg->add_flag("--purge", inv.purge, "also delete the volume's snapshots, history and mirror, "
                                        "and every replica's copy (a replica that is away when "
                                        "it returns)");

  sub("list", "registered volumes: last run, next run, current lag and copies");


  CLI::App* hist = sub("history", "every run and every verify of a volume, newest first");
  add_volume_args(hist, inv);
  hist->add_option("--limit", inv.limit, "show at most N runs (0 = all)")->type_name("N");

  CLI::App* snaps = sub("snapshots", "snapshots of a volume still on disk, newest first");
  add_volume_args(snaps, inv);

  CLI::App* rest = sub("restore", "extract a snapshot of a volume into a directory");
  add_volume_args(rest, inv);
  rest->add_option("--to", inv.to, "target directory (created if missing)")
      ->required()
      ->type_name("DIR");
  rest->add_option("--snapshot", inv.snapshot, "snapshot id, or 'latest' (default)")
      ->type_name("ID");
  rest->add_flag("--force", inv.force, "restore into a non-empty directory, replacing files");
  rest->add_flag("--live", inv.live,
                 "restore the tree as backupd's mirror holds it now: backupd takes a snapshot "
                 "first (a run, in the history) unless nothing changed since the last one");
  rest->add_option("--from", inv.from,
                   "fetch only from these sources, in parallel: [ID@]ADDR:PORT,... (replicators "
                   "serving restores, or backupd); default: backupd and the replicators holding "
                   "copies, or the remembered replicators when backupd is down")
      ->type_name("LIST");

  CLI::App* run = sub("run", "take a snapshot of a volume now, out of schedule (nothing is "
                             "written if it did not change since the last one)");
  add_volume_args(run, inv);

  CLI::App* status = sub("status", "live lag, transfers and copies of every volume, or of one "
                                   "(exit 9: that one is under-replicated)");
  status->add_option("HOST", inv.host, "the volume's name: its node's host name (with PATH)")
      ->type_name("");
  status->add_option("PATH", inv.path, "absolute path of the volume on the node (with HOST)")
      ->type_name("");
  CLI::Option* watch = status->add_flag("--watch", inv.watch, "redraw until interrupted");
  status->add_option("--count", inv.count, "stop after N redraws (default 0 = never)")
      ->type_name("N")
      ->needs(watch);
  status->add_option("--interval", inv.interval, "seconds between redraws (default 1)")
      ->type_name("SECONDS")
      ->needs(watch);

  CLI::App* set = sub("set", "change a registered volume's settings");
  add_volume_args(set, inv);
  set->add_option("--copies", inv.copies,
                  "copies to keep, the mirror included (1-16, or 0 for backupd's default); "
                  "replica copies are placed or dropped at once")
      ->required()
      ->type_name("N");

  CLI::App* verify = sub("verify", "compare the mirror with the node's tree (and the replicas, the "
                                   "snapshots); exit 10 if anything differs");
  add_volume_args(verify, inv);
  verify->add_flag("--snapshots", inv.snapshots, "also read every snapshot archive back whole");
  verify->add_flag("--replicas", inv.replicas, "also compare each replica's copy with the mirror");
  verify->add_flag("--read-data", inv.read_data,
                   "compare file contents too (digests read on every side), not only metadata");

  declare_peer_commands(app, inv, "replica", "replicators backupd serves (by identity)");
  declare_peer_commands(app, inv, "operator", "remote bkptool users backupd obeys (by identity)");
}

// `bkptool --show-id`: bkptool's identity, made if missing.
int show_id(const Globals& g) {
  auto path = identity_path(g.identity, Environment::from_process());
  if (!path) return report_failure(path.error(), g.json);
  auto identity = load_identity(*path);
  if (!identity) return report_failure(identity.error(), g.json);
  const std::string& id = (*identity)->id();
  if (g.json) {
    print_json(Json{{"ok", true}, {"id", id}, {"path", *path}});
  } else {
    std::printf("%s\n", id.c_str());
  }
  return 0;
}

struct CommandError {
  std::string message;  // "" when a command was given and the error is about its arguments
  bool suggests = false;  // the message names the command meant: --help would add nothing
};

// Why the command line names no command it can run: none given, or an unknown one (with the
// nearest known one, when there is one near enough). Looks below the commands already parsed
// (`replica lsit`).
CommandError command_error(const CLI::App& app) {
  const CLI::App* at = &app;
  std::string given;  // "replica ": the commands before the missing or unknown one
  while (!at->get_subcommands().empty()) {
    at = at->get_subcommands().front();
    given += at->get_name() + " ";
  }
  std::vector<std::string> names;
  for (const CLI::App* sub : at->get_subcommands([](const CLI::App*) { return true; })) {
    names.push_back(sub->get_name());
  }
  if (names.empty()) return {};
  std::string known = fmt::format("{}", fmt::join(names, ", "));
  if (app.remaining().empty()) {
    if (given.empty()) return {fmt::format("a command is required ({})", known)};
    given.pop_back();
    return {fmt::format("'{}' needs a command ({})", given, known)};
  }
  const std::string typed = app.remaining().front();
  if (auto near = nearest(typed, names); near && !typed.starts_with('-')) {
    return {fmt::format("unknown command '{}{}'; did you mean '{}{}'?", given, typed, given, *near),
            true};
  }
  return {fmt::format("unknown command '{}{}' ({})", given, typed, known)};
}

}  // namespace

int run_cli(int argc, char** argv) {
  log::set_component("bkptool");
  Globals g;
  g.json = wants_json(argc, argv);
  Invocation inv;

  CLI::App app("bkptool: control a backupfs server (backupd)", "bkptool");
  app.footer(help_footer());
  app.get_formatter()->label("SUBCOMMAND", "COMMAND");
  app.require_subcommand(0, 1);  // none only with --show-id or --version
  app.set_version_flag("--version", version_text("bkptool"), "print bkptool's version and exit");
  app.add_option("--server", g.server, "backupd: a control socket path, or ADDR:PORT (see below)")
      ->type_name("PATH|ADDR:PORT");
  app.add_option("--server-id", g.server_id, "backupd's identity, required over TCP")
      ->type_name("ID");
  app.add_option("--identity", g.identity, "bkptool's identity file for TCP (see below)")
      ->type_name("FILE");
  app.add_flag("--no-tls", g.no_tls, "plain TCP, for a backupd running with tls = false");
  app.add_flag("--show-id", g.show_id, "print bkptool's identity (made if missing) and exit");
  app.add_flag("--json", g.json, "print exactly one JSON document on stdout");
  app.add_flag("-v,--verbose", g.verbose, "log the connection and the JSON exchanged");
  app.add_flag("-q,--quiet", g.quiet, "print no confirmations or warnings, only errors");
  declare_commands(app, inv);

  auto usage_failure = [&g](std::string message) {
    if (!g.json) message += " (see bkptool --help)";
    return report_failure(Failure{Exit::kUsage, std::string(kCodeUsage), message}, g.json);
  };
  auto command_failure = [&](const CommandError& e) {
    if (!e.suggests) return usage_failure(e.message);
    return report_failure(Failure{Exit::kUsage, std::string(kCodeUsage), e.message}, g.json);
  };
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // CLI11 calls a misspelt command a missing one, or unexpected arguments; name what was
    // typed instead.
    CommandError error = command_error(app);
    return error.message.empty() ? usage_failure(e.what()) : command_failure(error);
  }
  if (g.verbose) log::set_level(log::Level::kDebug);
  if (g.quiet) log::set_level(log::Level::kWarn);
  if (g.show_id) return show_id(g);
  if (inv.command.empty()) return command_failure(command_error(app));

  Environment env = Environment::from_process();
  auto server = resolve_server(g.server, env, config_candidates(env), g.server_id);
  if (!server) return report_failure(server.error(), g.json);
  server->tls = !g.no_tls;
  // Needed for TCP to backupd, and for a restore from replicators whatever backupd's address.
  auto identity = identity_path(g.identity, env);
  if (identity) {
    server->identity_path = *identity;
  } else if (server->transport == Transport::kTcp && server->tls) {
    return report_failure(identity.error(), g.json);
  }
  int status = 0;
  auto done = run(inv, *server, [&g, &status](const Report& r) {
    report_success(r, g);
    status = exit_status(r.exit);
  });
  if (!done) return report_failure(done.error(), g.json);
  return status;
}

}  // namespace bkp::tools
