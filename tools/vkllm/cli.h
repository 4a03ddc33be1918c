/* cli.h: the subcommands of the `vkllm` command. Each lives in its own cmd_*.c,
 * takes the arguments after its name and returns the process exit code. */
#ifndef VKLLM_CLI_H
#define VKLLM_CLI_H

typedef struct cli_command {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv);
} cli_command;

int cmd_devices(int argc, char **argv);
int cmd_synth(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_serve(int argc, char **argv);

#endif
