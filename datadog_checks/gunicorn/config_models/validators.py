# Validation the spec cannot express. Generated once by ddev, then maintained by hand.


def instance_cpu_sample_interval(value, field=None, **kwargs):
    # The whole run sleeps this long once; beyond a second it would delay every other check in the Agent's runner.
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value <= 1:
        raise ValueError(
            'cpu_sample_interval must be a number of seconds greater than 0 and at most 1, got %r; '
            'remove the option to use the default of 0.1' % (value,)
        )
    return value


def instance_proc_name(value, field=None, **kwargs):
    if not isinstance(value, str) or not value.strip():
        raise ValueError(
            'proc_name must be the non-empty name shown in the master title `gunicorn: master [<proc_name>]`, got %r'
            % (value,)
        )
    return value
