/*
 * Entry points of the `shoal` subcommands. Each takes argv with argv[0] set
 * to the subcommand's name and returns the process exit status:
 * 0 success, 1 runtime failure, 2 usage error. Only main() exits.
 */
#ifndef SHOAL_CLIENT_CMD_H
#define SHOAL_CLIENT_CMD_H

int shoal_cmd_generate(int argc, char **argv);
int shoal_cmd_chat(int argc, char **argv);
int shoal_cmd_api(int argc, char **argv);
int shoal_cmd_bench(int argc, char **argv);
int shoal_cmd_mkmodel(int argc, char **argv);
int shoal_cmd_finetune(int argc, char **argv);
int shoal_cmd_serve(int argc, char **argv);  /* node/cmd_serve.c */
int shoal_cmd_keygen(int argc, char **argv); /* node/cmd_keygen.c */
int shoal_cmd_bootstrap(int argc, char **argv); /* node/cmd_bootstrap.c */
int shoal_cmd_swarm(int argc, char **argv);
int shoal_cmd_dht_probe(int argc, char **argv); /* a test tool */

#endif
