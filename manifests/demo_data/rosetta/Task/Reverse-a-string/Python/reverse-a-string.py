print('asdf'[::-1])
