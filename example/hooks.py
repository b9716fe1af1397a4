"""The hook of the README's example: `async_task('math.modf', 2.5, hook='hooks.print_result')`."""


def print_result(task):
    print(task.result)
